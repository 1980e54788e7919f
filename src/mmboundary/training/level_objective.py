"""The expected-reward objective over the five levels (`rl.algorithm: expected`).

PPO learns which level to state from one SAMPLED statement per step: the statement's reward
minus a baseline, times the gradient of that statement's log-probability. For the calibration
rewards this wastes what is known. Once a step is written, its correctness y_t and its internal
level L_int,t do not depend on the statement that follows it, so the reward of EVERY level is
known without sampling it: R_t(l) = alpha R_KA,t + beta R_EC(l, y_t) + gamma R_CS(l, L_int,t)
(`rewards.step_rewards` with the step's level set to l). The objective here is therefore the
exact expectation of the per-step reward under the policy's own distribution over the levels,

    J = mean over steps t of [ sum_l q_t(l) R_t(l) - kl_coef * KL(q_t || q_ref,t) ],

where q_t(l) is the policy's probability of stating level l at step t: the sequence
probability of level l's statement after the step (teacher-forced on the step's prefix; the sum
over `phrasings` statements of the level), normalised over the levels. Its gradient is the
all-actions policy gradient (Sutton et al. 1999, "Policy Gradient Methods for Reinforcement
Learning with Function Approximation", eq. (2); Allen et al. 2017, "Mean Actor-Critic"): exact for
the statement choice, with no sampling noise and no exploration problem (a level the policy
rarely says still gets its gradient; PPO on the tiny default almost never sampled level 5,
docs/results/rl.md). The reasoning is the greedy chain, as at evaluation.

Departures from PPO, all **[choice]**: no sampled statements, ratios, clipping or value head;
the statement's effect on LATER steps is not credited (the reasoning is the greedy chain and is
held near the SFT model by the anchor term of `rl.anchor_coef`); the KL to the SFT model is
taken between the two level distributions, exactly, instead of per sampled token.

Pure functions over plain values and tensors; `training/rl_levels.py` builds the alternatives
(`level_alternatives`) and runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmboundary.training.rewards import RewardConfig, step_rewards
from mmboundary.training.rollout import N_LEVELS, Rollout, RolloutStep

__all__ = ["LevelLoss", "StepAlternatives", "expected_level_loss", "level_alternatives", "level_logprobs",
           "level_reward_table"]


def level_reward_table(correct: Sequence[int], internal: Sequence[int], answer_correct: int,
                       config: RewardConfig,
                       knowledge: Sequence[float | None] | None = None) -> list[list[float]]:
    """R_t(l) for every step t and level l = 1..5: the total reward (`rewards.step_rewards`, so
    exactly the reward PPO would give) of the chain's steps if step t stated level l. The last
    step is the final step (R_KA and, by `config.final_ec_target`, R_EC on the answer).
    `knowledge[t]`: step t's matching degree (`RolloutStep.knowledge`), None for none."""
    n = len(correct)
    knowledge = list(knowledge) if knowledge is not None else [None] * n
    if len(knowledge) != n:
        raise ValueError(f"{n} correctness values but {len(knowledge)} matching degrees")
    if len(internal) != n:
        raise ValueError(f"{n} correctness values but {len(internal)} internal levels")
    table = [[0.0] * N_LEVELS for _ in range(n)]
    if not n:
        return table
    for level in range(1, N_LEVELS + 1):
        steps = tuple(RolloutStep(start=t, end=t + 1, statement_start=t, statement_end=t + 1,
                                  expressed_level=level, internal_level=int(internal[t]), correct=int(correct[t]),
                                  knowledge=knowledge[t])
                      for t in range(n))
        rollout = Rollout(example_id="levels", prompt_length=0, tokens=tuple(range(n)), steps=steps,
                          answer_correct=int(answer_correct))
        for t, r in enumerate(step_rewards(rollout, config)):
            table[t][level - 1] = r.total
    return table


@dataclass(frozen=True)
class StepAlternatives:
    """The alternatives of one step: `texts[l-1][j]` is the response up to the step's last comma,
    then phrasing j of level l's statement and the step's final punctuation; `prefix` is the
    response up to that comma (the shared state)."""

    prefix: str
    texts: tuple[tuple[str, ...], ...]


def level_alternatives(response: str, body_end: int, statement_end: int, sentence_end: int,
                       phrases: Sequence[Sequence[str]]) -> StepAlternatives:
    """The five levels' statements written after one step of `response`.

    `body_end`: index of the step's last comma (`ParsedStep.body_span[1]` when the statement was
    mapped to a level); `statement_end`: end
    of its statement (`ParsedStep.statement_span[1]`); `sentence_end`: end of the sentence
    (`ParsedStep.span[1]`): the characters between the two (the final punctuation) close every
    alternative ('.' when there are none). `phrases[l-1]`: the statements of level l."""
    if len(phrases) != N_LEVELS or any(not p for p in phrases):
        raise ValueError(f"need at least one statement for each of the {N_LEVELS} levels")
    if not 0 <= body_end <= statement_end <= sentence_end <= len(response):
        raise ValueError(f"bad spans: body end {body_end}, statement end {statement_end}, "
                         f"sentence end {sentence_end} in a response of {len(response)} characters")
    prefix = response[:body_end]
    close = response[statement_end:sentence_end].strip() or "."
    texts = tuple(tuple(f"{prefix}, {p}{close}" for p in level) for level in phrases)
    return StepAlternatives(prefix=prefix, texts=texts)


def level_logprobs(sequence_logprobs: torch.Tensor, phrasings: int) -> torch.Tensor:
    """[S, 5] log-probability of each level from the [S, 5 * phrasings] log-probabilities of its
    statements (level-major: level 1's phrasings first), log-sum-exp over each level's phrasings."""
    s = sequence_logprobs
    if s.dim() != 2 or s.shape[1] != N_LEVELS * phrasings:
        raise ValueError(f"expected [steps, {N_LEVELS * phrasings}] log-probs, got {tuple(s.shape)}")
    return torch.logsumexp(s.view(s.shape[0], N_LEVELS, phrasings), dim=-1)


@dataclass(frozen=True)
class LevelLoss:
    """`loss` (a scalar: the SUM over the given steps of -expected reward + kl_coef * KL, the
    caller divides by the global number of steps) and per-step detached statistics [S]."""

    loss: torch.Tensor
    expected_reward: torch.Tensor
    kl: torch.Tensor
    probs: torch.Tensor


def expected_level_loss(level_logp: torch.Tensor, rewards: torch.Tensor, ref_level_logp: torch.Tensor,
                        kl_coef: float, gradient: str = "exact", temperature: float = 1.0,
                        floor: float = 0.05) -> LevelLoss:
    """The negative objective over steps: q = softmax(level_logp) [S, 5] (the policy's level
    distribution), rewards R [S, 5], reference level log-probs (same shape, no gradient).

    - `gradient="exact"` (default): loss = sum_t [ -sum_l q_t(l) R_t(l) + kl_coef * KL(q_t || q_ref,t) ],
      whose gradient with respect to the level logits z = level_logp is -q_l (R_l - E_q R): a level
      the policy almost never states gets almost no gradient (the softmax policy gradient's
      plateau; measured on the tiny default: level 5 never rose).
    - `gradient="natural"`: the policy-gradient term is replaced by the surrogate
      -sum_l sg(A_l - mean_l' A_l') z_l with A_l = R_l - E_q R, whose gradient with respect to z is
      the centred advantage itself: the natural policy gradient of a softmax policy (Kakade 2002,
      "A Natural Policy Gradient"; Agarwal et al. 2021, "On the Theory of Policy Gradient
      Methods", section 5.3: for softmax logits NPG moves each logit by its advantage), which
      reaches the best level at the same rate however unlikely it was. Centring leaves q
      unchanged (softmax is shift invariant) and does not push the five statements' total
      probability up or down. The KL term is the same in both.

    - `gradient="floored"`: the exact gradient, except that a level with a positive advantage
      A_l = R_l - E_q R is weighted by max(q_l, `floor`) instead of q_l: surrogate
      -sum_l sg(w_l A_l) z_l with w_l = max(q_l, floor) if A_l > 0 else q_l. **[choice]**, this
      project's: a better level the policy almost never states still rises at a rate of at least
      `floor` x its advantage (the exact gradient's plateau), while a worse level is pushed down
      with the exact weight q_l, which vanishes as it becomes rare (the natural gradient pushed
      those without bound). Once every better level has q_l >= floor it is the exact gradient.

    `temperature` (tau >= 1, 'exact' only): the expectation is taken under softmax(z / tau), a
    flattened copy of q, so that the gradient of a rarely stated level, q_tau,l (R_l - E R) / tau,
    does not vanish; its maximiser is the same best level, and the KL term and the returned
    statistics use q itself (tau = 1).

    The returned `loss` differs in value between the variants; `expected_reward` is E_q R."""
    if level_logp.shape != rewards.shape or level_logp.shape != ref_level_logp.shape:
        raise ValueError(f"shapes differ: {tuple(level_logp.shape)}, {tuple(rewards.shape)}, "
                         f"{tuple(ref_level_logp.shape)}")
    if gradient not in ("exact", "natural", "floored"):
        raise ValueError(f"gradient must be 'exact', 'natural' or 'floored', got {gradient!r}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    z = level_logp.float()
    logq = torch.log_softmax(z, dim=-1)
    logq_ref = torch.log_softmax(ref_level_logp.float(), dim=-1).detach()
    q = logq.exp()
    r = rewards.float()
    expected = (q * r).sum(-1)
    kl = (q * (logq - logq_ref)).sum(-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if gradient == "exact":
        q_tau = q if temperature == 1.0 else torch.softmax(z / temperature, dim=-1)
        pg = -(q_tau * r).sum(-1)
    elif gradient == "floored":
        adv = (r - expected.unsqueeze(-1)).detach()
        qd = q.detach()
        w = torch.where(adv > 0, qd.clamp(min=floor), qd)
        pg = -(w * adv * z).sum(-1)
    else:
        adv = (r - expected.detach().unsqueeze(-1))
        adv = adv - adv.mean(-1, keepdim=True)
        pg = -(adv.detach() * z).sum(-1)
    loss = (pg + kl_coef * kl).sum()
    return LevelLoss(loss=loss, expected_reward=expected.detach(), kl=kl.detach(), probs=q.detach())
