"""What DPV and DPS share: prompting a model to write its confidence after every step, parsing
what it wrote, and refusing (a "not applicable" result, with the reason) for a model that cannot
follow the instruction.

The prompt is the question as the pipeline writes it (`models.vlm.question_text`: the question,
then `Options: a, b, c`), a blank line, and the method's instruction; it goes through the model's
own chat template (`VLM.prompt_text`) like every other prompt of the project. The response is
parsed as the SFT model's responses are (`statements.parse_chains`: each sentence split at its
last comma, the tail mapped to a level by a `LevelMapper`) and checked without its statements
(`generation.expressed_chain_record`). A step's confidence is p(L) = (L - 0.5) / 5 of its parsed
level; the answer's is its last step's, as in the evaluate stage. **[choice]** An unparsed step
(no comma, or a tail that maps to no level) gets `fallback` (0.5), flagged and counted, and the
parse counts are reported (`BaselineResult.parse`).

Applicability is decided before any generation by `common.instruction_following`: the config's
`instruction_following` when set, else the model's own attribute, else its kind (the tiny model:
not applicable, it was trained from scratch on the benchmark's chain format only).

Known limit: on the built-in benchmark a step counts as correct only when the benchmark's exact
checker parses it (`data.benchmark.check_step`: False for a sentence outside its small
language), so a prompted model that words its steps freely is judged mostly wrong there; on
datasets without scenes step correctness is None and only the answer is judged.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from mmboundary.baselines.base import (
    BaselineConfig,
    BaselineResult,
    Cost,
    ExampleConfidence,
    MethodName,
    ParseCounts,
    not_applicable,
)
from mmboundary.baselines.common import generate, instruction_following, load_images
from mmboundary.confidence.fusion import level_probability
from mmboundary.config import GenerationConfig
from mmboundary.generation import expressed_chain_record
from mmboundary.models.vlm import question_text
from mmboundary.records import Example, GeneratedChain
from mmboundary.statements.chain_format import parse_chains

__all__ = ["PromptedConfig", "prompt_question", "prompted_confidences", "run_prompted"]

#: The part of the instruction both methods share (before the confidence request).
STEP_INSTRUCTION = ('Answer in short steps, one sentence per step, and end with the step "So the answer is X." '
                    "At the end of every step, before its period, add a comma and ")


class PromptedConfig(BaselineConfig):
    """Fields of DPV and DPS.

    - `instruction_following`: whether the model follows instructions (None: the model's
      attribute, else its kind, see `common.INSTRUCTION_FOLLOWING_BY_KIND`);
    - `instruction`: the instruction appended to the question (None: the method's default);
    - `generation`: **[choice]** 256 new tokens (twice the pipeline's 128: a model that writes a
      statement after each step in its own words needs more room), otherwise the pipeline's
      greedy defaults.
    """

    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(max_new_tokens=256))
    instruction_following: bool | None = None
    instruction: str | None = None


def prompt_question(question: str, choices: Sequence[str] | None, instruction: str) -> str:
    """The user text of a prompted question: `question_text(question, choices)`, a blank line, the
    instruction."""
    if not instruction.strip():
        raise ValueError("prompt_question: empty instruction")
    return f"{question_text(question, choices)}\n\n{instruction.strip()}"


def prompted_confidences(chains: Sequence[GeneratedChain], fallback: float,
                         costs: Sequence[Cost] | None = None) -> list[ExampleConfidence]:
    """Step confidence p(level) of every parsed step (`fallback` where unparsed); the answer's is
    the last step's (`fallback` for an empty chain). Pure."""
    if costs is not None and len(costs) != len(chains):
        raise ValueError(f"prompted: {len(costs)} costs for {len(chains)} chains")
    out = []
    for i, chain in enumerate(chains):
        conf = [fallback if s.level is None else level_probability(s.level) for s in chain.steps]
        flags = [s.level is None for s in chain.steps]
        out.append(ExampleConfidence(
            example_id=chain.example_id, chain=chain, step_confidences=tuple(conf), step_fallback=tuple(flags),
            answer_confidence=conf[-1] if conf else fallback, answer_fallback=flags[-1] if flags else True,
            cost=costs[i] if costs is not None else Cost()))
    return out


def run_prompted(method: MethodName, vlm, examples: Sequence[Example], cfg: PromptedConfig, instruction: str,
                 mapper) -> BaselineResult:
    """Prompt `vlm` with `instruction` after each question, parse the statements with `mapper`,
    and read the confidences out (`prompted_confidences`); a "not applicable" result when the
    model does not follow instructions (nothing is generated then)."""
    follows, why = instruction_following(vlm, cfg.instruction_following)
    if not follows:
        return not_applicable(method, f"{method} prompts the model to state a confidence after each step, "
                                      f"which needs a model that follows instructions; {why}", cfg)
    gen = cfg.generation
    images = load_images(examples)
    outputs = generate(vlm, [(prompt_question(ex.question, ex.choices, instruction), None, images[ex.id])
                             for ex in examples],
                       max_new_tokens=gen.max_new_tokens, batch_size=gen.batch_size, do_sample=gen.do_sample,
                       temperature=gen.temperature)
    parsed = parse_chains([o.text for o in outputs], mapper)
    chains = [expressed_chain_record(ex, o.text, p) for ex, o, p in zip(examples, outputs, parsed)]
    costs = [Cost(sequences=1, tokens=o.tokens) for o in outputs]
    records = prompted_confidences(chains, cfg.fallback, costs)
    return BaselineResult(method=method, config=cfg.model_dump(mode="json"), examples=tuple(records),
                          parse=ParseCounts.of(parsed))
