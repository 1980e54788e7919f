"""Generate chains with a VLM and turn them into typed `GeneratedChain` records.

Each chain is split into steps (`mmboundary.steps`); each step's truth is decided exactly by
the built-in benchmark's checker when the example carries a scene, and left unknown (None)
otherwise; the run's step judge (`judging`) then sets it from the reference chain where the
config says so. Generation is greedy unless the
config says otherwise: no sampling is ever implicit.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmboundary.answers import extract_answer, is_correct
from mmboundary.config import GenerationConfig
from mmboundary.data.benchmark import check_step, claim_type
from mmboundary.data.images import load_image
from mmboundary.judging import judge_chains
from mmboundary.progress import make_progress
from mmboundary.records import Example, GeneratedChain, GeneratedStep
from mmboundary.statements.granularity import spread_answer_level
from mmboundary.steps import split_steps


def chain_record(example: Example, text: str) -> GeneratedChain:
    """Split, check and score one generated chain."""
    check = check_step if example.scene is not None else None
    steps = []
    for s, e in split_steps(text):
        sentence = text[s:e]
        correct = check(sentence, example) if check is not None else None
        kind = claim_type(sentence) if check is not None else None
        steps.append(GeneratedStep(text=sentence, start=s, end=e, correct=correct, kind=kind))
    answer = extract_answer(text)
    return GeneratedChain(example_id=example.id, text=text, steps=tuple(steps), answer=answer,
                          answer_correct=is_correct(answer, example.answers))


def expressed_chain_record(example: Example, text: str, parsed, granularity: str = "step") -> GeneratedChain:
    """A chain of a model that writes statements: each step's text without its statement
    (checked by the benchmark's checker when there is a scene), its statement and the level it
    maps back to (`parsed`: the parser's `ParsedChain` of this text, `statements.chain_format`).
    A step's `start`/`end` span its own words in `text` (up to the comma before its statement),
    so that internal confidence computed on it never reads the statement. The answer is read
    from the steps without their statements. `granularity="answer"`: every step's level is the one
    stated after the final step (`statements.granularity.spread_answer_level`)."""
    check = check_step if example.scene is not None else None
    steps = []
    levels = [p.level for p in parsed.steps]
    if granularity == "answer":
        levels = spread_answer_level(levels)
    for p, level in zip(parsed.steps, levels):
        correct = check(p.text, example) if check is not None else None
        kind = claim_type(p.text) if check is not None else None
        start, end = p.body_span  # the step's own words: internal signals never see the statement
        steps.append(GeneratedStep(text=p.text, start=start, end=end, correct=correct,
                                   statement=p.statement, level=level, kind=kind))
    answer = extract_answer(" ".join(s.text for s in steps))
    return GeneratedChain(example_id=example.id, text=text, steps=tuple(steps), answer=answer,
                          answer_correct=is_correct(answer, example.answers))


def generate_texts(vlm, examples: Sequence[Example], cfg: GenerationConfig,
                   description: str = "generate") -> list[str]:
    """Batched generation over `examples` with a progress bar; the stripped texts."""
    out: list[str] = []
    with make_progress() as progress:
        task = progress.add_task(description, total=len(examples), info="")
        for i in range(0, len(examples), cfg.batch_size):
            batch = examples[i:i + cfg.batch_size]
            texts = vlm.generate(
                [ex.question for ex in batch], [ex.choices for ex in batch],
                [load_image(ex.image) for ex in batch], max_new_tokens=cfg.max_new_tokens,
                do_sample=cfg.do_sample, temperature=cfg.temperature)
            out += [t.strip() for t in texts]
            progress.advance(task, len(batch))
    return out


def generate_chains(vlm, examples: Sequence[Example], cfg: GenerationConfig,
                    description: str = "generate", judge=None) -> list[GeneratedChain]:
    """Batched generation over `examples`, split and checked (`chain_record`), each step judged
    by `judge` when given (`judging.judge_chains`)."""
    texts = generate_texts(vlm, examples, cfg, description)
    return judge_chains([chain_record(ex, t) for ex, t in zip(examples, texts)], examples, judge)
