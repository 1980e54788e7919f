"""Baseline `multisample`: several sampled chains with verbalised confidences, aggregated.

Method (method.md section 7): Xiong et al., ICLR 2024 ("Can LLMs Express Their Uncertainty? An
Empirical Evaluation of Confidence Elicitation in LLMs") sample several answers, each with a
verbalised confidence, and aggregate them; their "Avg-Conf" aggregation gives an answer the
confidence sum_k 1[answer_k = answer] * c_k / sum_k c_k. Here the model writes a statement after
every step (`[z1, c1, ..., zT, cT]`: in the pipeline, the SFT model), per example:

- the judged chain is generated under `cfg.generation` (greedy by default) and `cfg.n_samples`
  chains are sampled at `cfg.temperature`; every chain is parsed (`statements.parse_chains` with
  the given statement mapper, one mapper call for all) and checked without its statements
  (`generation.expressed_chain_record`); a statement's level L stands for p(L) = (L - 0.5) / 5
  (`confidence.fusion.level_probability`);
- step confidence of judged step t = the mean of p over its votes: the judged step's own parsed
  level (**[choice]** `include_judged=True`: the judged chain is one of the samples) and, for
  each sample, the level of the sample's step most similar to it when that similarity is >=
  `cfg.threshold` (one best-matching step per sample; an unparsed best match is a missing vote,
  **[choice]**: another matched step of the same sample is not consulted);
- answer confidence = Avg-Conf over the chains whose last step has a parsed level, c_k = p of
  that level: a chain whose answer equals the judged chain's counts in the numerator and the
  denominator, any other chain (another answer, or none) in the denominator only.

Unparsed statements are missing votes, never guessed. A judged step with no vote, or an answer
with no voting chain, gets `cfg.fallback` (**[choice]** 0.5), flagged and counted
(`BaselineResult.fallback_steps` / `fallback_answers`); the parse counts are in
`BaselineResult.parse`. **[choice]** A judged chain that states no answer gets answer
confidence 0, as in `sc`.

Where it departs from the paper: the paper's Multisample is answer-level and its settings are not
given (all numbers are `SamplingConfig` choices); the step votes by sentence similarity are this
project's extension to step level, and statements are this project's five-level statements, not
free numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from mmboundary.baselines.base import BaselineResult, Cost, ExampleConfidence, ParseCounts, SamplingConfig
from mmboundary.baselines.common import best_matches, judged_and_sampled
from mmboundary.confidence.fusion import level_probability
from mmboundary.generation import expressed_chain_record
from mmboundary.records import Example, GeneratedChain
from mmboundary.statements.chain_format import parse_chains

__all__ = ["MultisampleConfig", "multisample_confidences", "run_multisample"]


class MultisampleConfig(SamplingConfig):
    """`SamplingConfig` (5 samples at temperature 1.0, seed 0, threshold 0.65), and whether the
    judged chain's own statements vote (`include_judged`, **[choice]** True)."""

    include_judged: bool = Field(True, description="The judged chain's own statements count as one vote.")


def multisample_confidences(chains: Sequence[GeneratedChain], samples: Sequence[Sequence[GeneratedChain]],
                            similarity, cfg: MultisampleConfig,
                            costs: Sequence[Cost] | None = None) -> list[ExampleConfidence]:
    """Multisample confidences of judged `chains` (steps carrying their parsed `level`, None when
    unparsed) given each one's sampled chains (`samples[i]`, same form). Pure apart from ONE
    `similarity.pairwise` call. `costs[i]`: what example i cost before the similarity."""
    if len(samples) != len(chains):
        raise ValueError(f"multisample: {len(chains)} chains but {len(samples)} sample lists")
    if costs is not None and len(costs) != len(chains):
        raise ValueError(f"multisample: {len(costs)} costs for {len(chains)} chains")
    matches, pairs = best_matches([[s.text for s in c.steps] for c in chains],
                                  [[[s.text for s in x.steps] for x in mine] for mine in samples], similarity)
    out = []
    for i, (chain, mine) in enumerate(zip(chains, samples)):
        conf, fallback = [], []
        for t, step in enumerate(chain.steps):
            votes = []
            if cfg.include_judged and step.level is not None:
                votes.append(level_probability(step.level))
            for sample, m in zip(mine, matches[i][t]):
                if m.similarity is None or m.similarity < cfg.threshold:
                    continue
                level = sample.steps[m.index].level
                if level is not None:
                    votes.append(level_probability(level))
            conf.append(sum(votes) / len(votes) if votes else cfg.fallback)
            fallback.append(not votes)
        voters = ([chain] if cfg.include_judged else []) + list(mine)
        weights = [(x.answer, level_probability(x.steps[-1].level)) for x in voters
                   if x.steps and x.steps[-1].level is not None]
        if chain.answer is None:
            answer, answer_fallback = 0.0, False
        elif not weights:
            answer, answer_fallback = cfg.fallback, True
        else:
            answer = sum(w for a, w in weights if a == chain.answer) / sum(w for _, w in weights)
            answer_fallback = False
        cost = (costs[i] if costs is not None else Cost()) + Cost(similarity_pairs=pairs[i])
        out.append(ExampleConfidence(
            example_id=chain.example_id, chain=chain, step_confidences=tuple(conf), step_fallback=tuple(fallback),
            answer_confidence=answer, answer_fallback=answer_fallback, samples=tuple(mine), cost=cost))
    return out


def run_multisample(vlm, examples: Sequence[Example], cfg: MultisampleConfig | None = None, *, mapper,
                    similarity) -> BaselineResult:
    """Generate each example's judged chain and `cfg.n_samples` sampled chains (seeded) with `vlm`
    (a model that writes statements), parse them with `mapper` (a `statements.mapping` mapper),
    check them, and aggregate (`multisample_confidences`)."""
    cfg = cfg or MultisampleConfig()
    judged, sampled = judged_and_sampled(vlm, examples, cfg.generation, cfg.n_samples, cfg.temperature, cfg.seed)
    k = cfg.n_samples
    parsed = parse_chains([o.text for o in judged] + [o.text for o in sampled], mapper)
    n = len(examples)
    chains = [expressed_chain_record(ex, o.text, p) for ex, o, p in zip(examples, judged, parsed[:n])]
    samples = [[expressed_chain_record(ex, o.text, p)
                for o, p in zip(sampled[i * k:(i + 1) * k], parsed[n + i * k:n + (i + 1) * k])]
               for i, ex in enumerate(examples)]
    costs = [Cost(sequences=1 + k, tokens=judged[i].tokens + sum(o.tokens for o in sampled[i * k:(i + 1) * k]))
             for i in range(n)]
    records = multisample_confidences(chains, samples, similarity, cfg, costs)
    return BaselineResult(method="multisample", config=cfg.model_dump(mode="json"), examples=tuple(records),
                          parse=ParseCounts.of(parsed))
