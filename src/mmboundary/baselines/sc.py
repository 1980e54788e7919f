"""Baseline `sc`: self-consistency, agreement across sampled chains as confidence.

Method: self-consistency (Wang et al., ICLR 2023, "Self-Consistency Improves Chain of Thought
Reasoning in Language Models") samples several reasoning chains and takes the majority answer;
used as a confidence (method.md section 7; e.g. Xiong et al., ICLR 2024, "Can LLMs Express Their
Uncertainty?", consistency-based confidence), the share of samples that agree is the confidence.
Here, per example:

- the judged chain is the model's chain under `cfg.generation` (greedy by default, the chain the
  evaluate stage judges), and `cfg.n_samples` more chains are sampled at `cfg.temperature`;
- answer confidence = the share of the samples whose final answer equals the judged chain's
  (answers normalised as for Acc, `answers.extract_answer`);
- step confidence of each judged step = the share of the samples that contain a step whose
  sentence similarity to it is >= `cfg.threshold` (`similarity`: a `SentenceSimilarity`,
  `ExactSimilarity`, or any object with `pairwise(pairs) -> array`).

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

from mmboundary.baselines.base import BaselineResult, Cost, ExampleConfidence, SamplingConfig
from mmboundary.baselines.common import best_matches, judged_and_sampled
from mmboundary.generation import chain_record
from mmboundary.records import Example, GeneratedChain

__all__ = ["SCConfig", "run_sc", "sc_confidences"]


class SCConfig(SamplingConfig):
    """Self-consistency settings: those of `SamplingConfig` (5 samples at temperature 1.0, seed 0,
    similarity threshold 0.65)."""


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


def run_sc(vlm, examples: Sequence[Example], cfg: SCConfig | None = None, *, similarity) -> BaselineResult:
    """Generate each example's judged chain and `cfg.n_samples` sampled chains (seeded) with `vlm`,
    check them (`generation.chain_record`) and score their agreement (`sc_confidences`)."""
    cfg = cfg or SCConfig()
    judged, sampled = judged_and_sampled(vlm, examples, cfg.generation, cfg.n_samples, cfg.temperature, cfg.seed)
    k = cfg.n_samples
    chains = [chain_record(ex, o.text) for ex, o in zip(examples, judged)]
    samples = [[chain_record(ex, o.text) for o in sampled[i * k:(i + 1) * k]] for i, ex in enumerate(examples)]
    costs = [Cost(sequences=1 + k, tokens=judged[i].tokens + sum(o.tokens for o in sampled[i * k:(i + 1) * k]))
             for i in range(len(examples))]
    records = sc_confidences(chains, samples, similarity, cfg.threshold, costs)
    return BaselineResult(method="sc", config=cfg.model_dump(mode="json"), examples=tuple(records))
