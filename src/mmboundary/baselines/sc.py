"""Baseline `sc`: self-consistency, agreement across sampled chains as confidence.

Method: self-consistency (Wang et al., ICLR 2023, "Self-Consistency Improves Chain of Thought
Reasoning in Language Models") samples several reasoning chains and takes the majority answer;
used as a confidence (method.md section 7; e.g. Xiong et al., ICLR 2024, "Can LLMs Express Their
Uncertainty?", consistency-based confidence), the share of samples that agree is the confidence.
Here, per example:

- the judged chain is the model's chain under `cfg.generation` (greedy by default, the chain the
  evaluate stage judges), and `cfg.n_samples` more chains are sampled at `cfg.temperature`;
- answer confidence = the share of the samples whose final answer equals the judged chain's
  (answers normalised as for Acc, `answers.extract_answer`: the dataset's answer equivalence,
  the one `answers.is_correct` judges by, for every dataset);
- step confidence of each judged step = the share of the samples that contain a step
  *equivalent* to it, by `cfg.equivalence` (`sc_equivalence`):
  - "exact": the two sentences are equal after answer normalisation (`ExactSimilarity`: case,
    punctuation and articles ignored, number words one..twenty read as digits, so "There are two
    red circles." agrees with "There are 2 red circles." and not with "There are 3 red
    circles."); the equivalence of the built-in benchmark, whose steps are sentences of a small
    templated language checked exactly;
  - "encoder": the sentence similarity of the `similarity` input (the run's `SentenceSimilarity`,
    MiniLM by default) is >= `cfg.threshold`; for external datasets, whose steps are free text.
    MiniLM rates "There are 2 red circles." and "There are 3 red circles." 0.885, so on the
    built-in benchmark it makes nearly every sample agree with nearly every step;
  - "auto" (default): "exact" when every example has a scene (the built-in benchmark), else
    "encoder".

Where it departs from the paper: the paper names SC without its settings; every number is a
**[choice]** of `SamplingConfig`. Self-consistency proper replaces the greedy answer by the
majority answer; here the greedy chain is kept, so that every method is judged on the same chains
and only the confidence differs. The paper's SC is answer-level; the step agreement is this
project's extension to step level. **[choice]** A judged chain that states no answer gets answer
confidence 0 (an absent answer agrees with nothing and cannot be right). SC needs no fallback:
with at least one sample every share is defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from mmboundary.baselines.base import BaselineResult, Cost, ExampleConfidence, SamplingConfig
from mmboundary.baselines.common import ExactSimilarity, best_matches, judged_and_sampled
from mmboundary.errors import ConfigError
from mmboundary.generation import chain_record
from mmboundary.records import Example, GeneratedChain

__all__ = ["SCConfig", "run_sc", "sc_confidences", "sc_equivalence"]


class SCConfig(SamplingConfig):
    """Self-consistency settings: those of `SamplingConfig` (5 samples at temperature 1.0, seed 0,
    similarity threshold 0.65, used by the "encoder" equivalence only) and `equivalence`, when a
    sampled step agrees with a judged step (module docstring).

    **[choice]** `equivalence` "auto": the dataset's exact equivalence where it has one (the
    built-in benchmark, every example with a scene), the sentence encoder at `threshold`
    otherwise. The equivalence used is recorded in the result's `config` (`run_sc`)."""

    equivalence: Literal["auto", "exact", "encoder"] = Field(
        "auto", description="When a sampled step agrees with a judged one: 'exact' (equal after answer "
        "normalisation, `ExactSimilarity`), 'encoder' (the `similarity` input >= `threshold`), or 'auto' "
        "(exact on the built-in benchmark, whose examples have scenes; encoder otherwise).")


def sc_equivalence(cfg: SCConfig, examples: Sequence[Example]) -> str:
    """The step equivalence `run_sc` uses on `examples`: `cfg.equivalence`, with "auto" resolved
    to "exact" when every example has a scene (the built-in benchmark) and to "encoder"
    otherwise."""
    if cfg.equivalence != "auto":
        return cfg.equivalence
    return "exact" if examples and all(ex.scene is not None for ex in examples) else "encoder"


def sc_confidences(chains: Sequence[GeneratedChain], samples: Sequence[Sequence[GeneratedChain]], similarity,
                   threshold: float, costs: Sequence[Cost] | None = None) -> list[ExampleConfidence]:
    """Self-consistency confidences of judged `chains` given each one's sampled chains
    (`samples[i]`, at least one each). Pure apart from ONE `similarity.pairwise` call for all
    step pairs. `costs[i]`: what example i cost before the similarity (its pairs are added)."""
    if len(samples) != len(chains):
        raise ValueError(f"sc: {len(chains)} chains but {len(samples)} sample lists")
    if costs is not None and len(costs) != len(chains):
        raise ValueError(f"sc: {len(costs)} costs for {len(chains)} chains")
    for chain, mine in zip(chains, samples):
        if not mine:
            raise ValueError(f"sc: chain {chain.example_id!r} has no samples")
    matches, pairs = best_matches([[s.text for s in c.steps] for c in chains],
                                  [[[s.text for s in x.steps] for x in mine] for mine in samples], similarity)
    out = []
    for i, (chain, mine) in enumerate(zip(chains, samples)):
        n = len(mine)
        steps = [sum(m.similarity is not None and m.similarity >= threshold for m in row) / n for row in matches[i]]
        agree = sum(chain.answer is not None and x.answer == chain.answer for x in mine)
        cost = (costs[i] if costs is not None else Cost()) + Cost(similarity_pairs=pairs[i])
        out.append(ExampleConfidence(
            example_id=chain.example_id, chain=chain, step_confidences=tuple(steps),
            step_fallback=(False,) * len(steps), answer_confidence=agree / n, samples=tuple(mine), cost=cost))
    return out


def run_sc(vlm, examples: Sequence[Example], cfg: SCConfig | None = None, *, similarity=None) -> BaselineResult:
    """Generate each example's judged chain and `cfg.n_samples` sampled chains (seeded) with `vlm`,
    check them (`generation.chain_record`) and score their agreement (`sc_confidences`) by the
    step equivalence `sc_equivalence(cfg, examples)`: exact (`ExactSimilarity`; `similarity` is
    not used) or the `similarity` input at `cfg.threshold` (a `ConfigError` when it is None). The
    result's `config` records the equivalence used (`equivalence`, never "auto")."""
    cfg = cfg or SCConfig()
    equivalence = sc_equivalence(cfg, examples)
    if equivalence == "encoder" and similarity is None:
        raise ConfigError("baseline 'sc' with the encoder equivalence needs a sentence similarity (BaselineInputs)")
    if equivalence == "exact":
        # equal after normalisation scores 1.0, anything else 0.0: any threshold in (0, 1] is "equal"
        similarity, threshold = ExactSimilarity(), 1.0
    else:
        threshold = cfg.threshold
    judged, sampled = judged_and_sampled(vlm, examples, cfg.generation, cfg.n_samples, cfg.temperature, cfg.seed)
    k = cfg.n_samples
    chains = [chain_record(ex, o.text) for ex, o in zip(examples, judged)]
    samples = [[chain_record(ex, o.text) for o in sampled[i * k:(i + 1) * k]] for i, ex in enumerate(examples)]
    costs = [Cost(sequences=1 + k, tokens=judged[i].tokens + sum(o.tokens for o in sampled[i * k:(i + 1) * k]))
             for i in range(len(examples))]
    records = sc_confidences(chains, samples, similarity, threshold, costs)
    used = cfg.model_copy(update={"equivalence": equivalence})
    return BaselineResult(method="sc", config=used.model_dump(mode="json"), examples=tuple(records))
