"""Generate chains with a VLM and turn them into typed `GeneratedChain` records.

Each chain is split into steps (`mmboundary.steps`); each step's truth is decided exactly by
the built-in benchmark's checker when the example carries a scene, and left unknown (None)
otherwise (later issues match steps to reference chains). Generation is greedy unless the
config says otherwise: no sampling is ever implicit.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmboundary.answers import extract_answer, is_correct
from mmboundary.config import GenerationConfig
from mmboundary.data.images import load_image
from mmboundary.progress import make_progress
from mmboundary.records import Example, GeneratedChain, GeneratedStep
from mmboundary.steps import split_steps


def chain_record(example: Example, text: str) -> GeneratedChain:
    """Split, check and score one generated chain."""
    check = None
    if example.scene is not None:
        from mmboundary.data.benchmark import check_step as check
    steps = []
    for s, e in split_steps(text):
        sentence = text[s:e]
        correct = check(sentence, example) if check is not None else None
        steps.append(GeneratedStep(text=sentence, start=s, end=e, correct=correct))
    answer = extract_answer(text)
    return GeneratedChain(example_id=example.id, text=text, steps=tuple(steps), answer=answer,
                          answer_correct=is_correct(answer, example.answers))


def generate_chains(vlm, examples: Sequence[Example], cfg: GenerationConfig,
                    description: str = "generate") -> list[GeneratedChain]:
    """Batched generation over `examples` with a progress bar."""
    out: list[GeneratedChain] = []
    with make_progress() as progress:
        task = progress.add_task(description, total=len(examples), info="")
        for i in range(0, len(examples), cfg.batch_size):
            batch = examples[i:i + cfg.batch_size]
            texts = vlm.generate(
                [ex.question for ex in batch], [ex.choices for ex in batch],
                [load_image(ex.image) for ex in batch], max_new_tokens=cfg.max_new_tokens,
                do_sample=cfg.do_sample, temperature=cfg.temperature)
            out += [chain_record(ex, t.strip()) for ex, t in zip(batch, texts)]
            progress.advance(task, len(batch))
    return out
