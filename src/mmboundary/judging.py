"""The run's step judge: built from the config's `judge` section in one place, applied to chains.

Every stage that reads a generated step's truth (estimate, rl, evaluate, the baselines, the
self-correction rows, the API) gets it from `judge_chains(chains, examples, judge)` with the
judge `make_step_judge(cfg.judge)` builds. The judges themselves are pure
(`evaluation.judges`); this module only chooses one, loads its sentence model, and writes each
verdict into the chain's steps (`GeneratedStep.correct`, `match_degree`, `reference`).

Kinds (`judge.kind`):
- `exact`: the built-in benchmark's checker (an error on an example without a scene);
- `encoder`, `consistent`: matched to the example's reference chain (`evaluation.judges`);
- `auto` (default) **[choice]**: exact where the example has a scene (the built-in benchmark,
  today's behaviour), `consistent` elsewhere (the best judge that runs offline: measured in
  docs/results/step-judges.md). Its sentence model is loaded only when a step without exact
  truth is judged, so the built-in default never loads it for step truth.

A step of an example without a scene and without a reference chain keeps `correct=None` under
every text judge: there is nothing to judge it against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mmboundary.confidence.similarity import SentenceSimilarity, default_encoder_path
from mmboundary.config import JudgeConfig
from mmboundary.evaluation.judges import (
    ConsistentJudge,
    EncoderJudge,
    ExactJudge,
    StepJudge,
    StepVerdict,
)
from mmboundary.records import Example, GeneratedChain

__all__ = ["DEFAULT_THRESHOLDS", "AutoJudge", "judge_chains", "make_step_judge", "reusable_similarity"]

#: Threshold of each text judge with the offline MiniLM bi-encoder (`judge.threshold: null`),
#: chosen on the built-in default run's TRAIN steps (8,000, vanilla model) as the highest Cohen's
#: kappa with the exact checker over 0.40, 0.45, ..., 0.95 (benchmarks/step_judges.py;
#: docs/results/step-judges.md): encoder 0.95 (kappa 0.705), consistent 0.90 (kappa 0.989).
DEFAULT_THRESHOLDS: dict[str, float] = {"encoder": 0.95, "consistent": 0.90}


class AutoJudge:
    """Exact truth where the example has a scene, the text judge `text()` builds elsewhere (built
    on first use)."""

    name = "auto"

    def __init__(self, text: Callable[[], StepJudge]):
        self._make_text = text
        self._text: StepJudge | None = None
        self._exact = ExactJudge()

    def judge(self, steps: Sequence[Sequence[str]],
              examples: Sequence[Example]) -> list[tuple[StepVerdict | None, ...]]:
        if len(steps) != len(examples):
            raise ValueError(f"{len(steps)} step lists but {len(examples)} examples")
        out: list[tuple[StepVerdict | None, ...] | None] = [None] * len(examples)
        for exact in (True, False):
            idx = [i for i, ex in enumerate(examples) if (ex.scene is not None) == exact]
            if not idx:
                continue
            if not exact and self._text is None:
                self._text = self._make_text()
            judge = self._exact if exact else self._text
            for i, v in zip(idx, judge.judge([steps[i] for i in idx], [examples[i] for i in idx])):
                out[i] = v
        return out  # type: ignore[return-value]


def reusable_similarity(cfg: JudgeConfig, *loaded):
    """The first of `loaded` (sentence similarities a caller has already loaded; None skipped)
    that is the model `cfg` names (same path and kind), so that the judge shares it; else None."""
    want = (str(cfg.model) if cfg.model is not None else default_encoder_path(), cfg.similarity)
    return next((s for s in loaded if s is not None and (getattr(s, "path", None), getattr(s, "kind", None)) == want),
                None)


def make_step_judge(cfg: JudgeConfig, similarity=None) -> StepJudge:
    """The judge `cfg` names. `similarity`: an already loaded `SentenceSimilarity` to use for the
    text judges (None: loaded from `cfg.model` / `cfg.similarity` when first needed)."""

    def text_judge(kind: str) -> StepJudge:
        sim = similarity if similarity is not None else SentenceSimilarity(cfg.model, kind=cfg.similarity)
        threshold = cfg.threshold if cfg.threshold is not None else DEFAULT_THRESHOLDS[kind]
        return (ConsistentJudge if kind == "consistent" else EncoderJudge)(sim, threshold)

    if cfg.kind == "exact":
        return ExactJudge()
    if cfg.kind in ("encoder", "consistent"):
        return text_judge(cfg.kind)
    return AutoJudge(lambda: text_judge("consistent"))


def judge_chains(chains: Sequence[GeneratedChain], examples: Sequence[Example] | dict[str, Example],
                 judge: StepJudge | None) -> list[GeneratedChain]:
    """`chains` with every step's `correct`, `match_degree` and `reference` set by `judge` (one
    `judge.judge` call for all of them). `match_degree` is set for a step matched to a reference
    step only: for the others (unmatched, or exact truth) the degree equals `correct` (1 / 0), so
    R_KA = 2 y - 1 says the same and the chains of exact truth stay as the checker writes them.
    `examples`: the chains' examples, in chain order or by id.
    A step the judge cannot judge (None verdict) keeps what it had; `judge=None` changes nothing."""
    chains = list(chains)
    if judge is None or not chains:
        return chains
    by_id = examples if isinstance(examples, dict) else {ex.id: ex for ex in examples}
    missing = [c.example_id for c in chains if c.example_id not in by_id]
    if missing:
        raise ValueError(f"judge_chains: no example for chain {missing[0]!r}")
    verdicts = judge.judge([[s.text for s in c.steps] for c in chains], [by_id[c.example_id] for c in chains])
    out = []
    for chain, vs in zip(chains, verdicts):
        if len(vs) != len(chain.steps):
            raise ValueError(f"judge {judge.name!r} gave {len(vs)} verdicts for the {len(chain.steps)} steps of "
                             f"chain {chain.example_id!r}")
        steps = tuple(s if v is None else s.model_copy(update={
            "correct": v.correct, "reference": v.reference,
            "match_degree": v.degree if v.reference is not None else None})
            for s, v in zip(chain.steps, vs))
        out.append(chain.model_copy(update={"steps": steps}))
    return out
