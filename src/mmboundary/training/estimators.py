"""The advantage estimators of PPO (`rl.advantage`), registered by name with one signature.

Each estimator is a function `(inputs: AdvantageInputs, cfg: RLConfig, accelerator) -> Advantages`
registered with `@register_advantage(name, critic=...)` (as verl's `core_algos`); the trainer
looks one up by `cfg.advantage` (`advantage_estimator`). `critic` says how the rest of PPO
treats it: a critic-based estimator (`gae`) trains the value head (value loss) and gets the KL
penalty inside its per-token rewards; a critic-free one (`group`, `statement`) gets per-token
rewards without KL, the KL is added to the loss instead (`ppo.ppo_loss`), and there is no value
loss. The tensors are one process's [B, L] batch; an estimator that needs statistics over the
batch of every process reduces them itself.

    gae        GAE over tokens with the old values (`advantages.gae`), whitened over the batch
               of all processes (`whiten_advantages`): the paper's
    group      critic-free: per-step returns normalised over each question's samples
               (`advantages.group_normalized_step_advantages`), spread over the tokens
    statement  critic-free, statement tokens only: each statement's calibration reward minus
               the mean of the other steps of its (correctness, internal level) cell over the
               batch of all processes (`advantages.leave_one_out_advantages`), over their RMS
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mmboundary.training import advantages as adv_math
from mmboundary.training.rl_config import RLConfig
from mmboundary.training.rl_update import reduce_sum
from mmboundary.training.rollout import N_LEVELS
from mmboundary.training.samples import Sample

__all__ = ["ADVANTAGE_ESTIMATORS", "AdvantageEstimator", "AdvantageInputs", "Advantages", "advantage_estimator",
           "global_whiten", "register_advantage"]


@dataclass(frozen=True, eq=False)
class AdvantageInputs:
    """What an estimator reads: one process's samples (rewards assigned, `rewards.assign_rewards`)
    and their [B, L] tensors, right padded: the per-token `rewards` (step totals on their
    statements' last tokens, the empty-response reward, and the KL penalty for a critic-based
    estimator), the `values` of the policy that sampled, and `mask`, True on every real token of
    an active sample."""

    samples: Sequence[Sample]
    rewards: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True, eq=False)
class Advantages:
    """[B, L] advantages and the value head's regression targets (zeros for a critic-free estimator)."""

    advantages: torch.Tensor
    returns: torch.Tensor


AdvantageFn = Callable[[AdvantageInputs, RLConfig, object], Advantages]


@dataclass(frozen=True)
class AdvantageEstimator:
    """A registered estimator: its name, whether it uses the value head (`critic`, see the module
    docstring) and its function."""

    name: str
    critic: bool
    fn: AdvantageFn

    def __call__(self, inputs: AdvantageInputs, cfg: RLConfig, accelerator=None) -> Advantages:
        return self.fn(inputs, cfg, accelerator)


#: name -> estimator, filled by `register_advantage`.
ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}


def register_advantage(name: str, *, critic: bool) -> Callable[[AdvantageFn], AdvantageFn]:
    """Register the decorated function as estimator `name` (see the module docstring)."""
    def wrap(fn: AdvantageFn) -> AdvantageFn:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = AdvantageEstimator(name=name, critic=critic, fn=fn)
        return fn
    return wrap


def advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered as `name`."""
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {name!r}; registered: "
                         f"{', '.join(sorted(ADVANTAGE_ESTIMATORS))}") from None


def global_whiten(x: torch.Tensor, mask: torch.Tensor, accelerator) -> torch.Tensor:
    """`advantages.whiten` over the rows of every process (each has the same number of rows)."""
    if accelerator is None or accelerator.num_processes == 1:
        return adv_math.whiten(x, mask) if bool(mask.any()) else x
    device = accelerator.device
    length = torch.tensor([x.shape[1]], device=device)
    longest = int(accelerator.gather(length).max())
    pad = longest - x.shape[1]
    xp = torch.nn.functional.pad(x, (0, pad)).to(device)
    mp = torch.nn.functional.pad(mask, (0, pad)).to(device)
    xs, ms = accelerator.gather(xp), accelerator.gather(mp)
    if not bool(ms.any()):
        return x
    white = adv_math.whiten(xs, ms)
    rows = x.shape[0]
    r = accelerator.process_index
    return white[r * rows:(r + 1) * rows, : x.shape[1]].to(x.device)


@register_advantage("gae", critic=True)
def gae(inputs: AdvantageInputs, cfg: RLConfig, accelerator) -> Advantages:
    """GAE (gamma, lambda) over tokens with the old values, then whitened over the batch of all
    processes (`cfg.whiten_advantages`)."""
    adv, returns = adv_math.gae(inputs.rewards, inputs.values, inputs.mask, gamma=cfg.gae_gamma, lam=cfg.gae_lambda)
    if cfg.whiten_advantages:
        adv = global_whiten(adv, inputs.mask, accelerator)
    return Advantages(advantages=adv, returns=returns)


@register_advantage("group", critic=False)
def group(inputs: AdvantageInputs, cfg: RLConfig, accelerator) -> Advantages:
    """Per-step returns (discount `cfg.gae_gamma`) normalised over the active samples of each
    question (`group`), spread over the tokens (`advantages.broadcast_step_values`); a response
    without steps has one return, `cfg.empty_response_reward`, on every token."""
    samples = inputs.samples
    returns = torch.zeros_like(inputs.rewards)
    adv = torch.zeros_like(inputs.rewards)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        if s.active:
            groups.setdefault(s.group, []).append(i)
    for members in groups.values():
        per_step = [[st.total for st in samples[i].rollout.rewards] if samples[i].rollout.steps
                    else [cfg.empty_response_reward] for i in members]
        normed = adv_math.group_normalized_step_advantages(per_step, discount=cfg.gae_gamma)
        for i, a in zip(members, normed):
            r = samples[i].rollout
            spread = adv_math.broadcast_step_values(r, a) if r.steps else torch.full((len(r),), float(a[0]))
            adv[i, : len(r)] = spread
    return Advantages(advantages=adv, returns=returns)


@register_advantage("statement", critic=False)
def statement(inputs: AdvantageInputs, cfg: RLConfig, accelerator) -> Advantages:
    """On each statement clause (parsed or not) of an active sample: `leave_one_out_advantages`
    of its calibration reward (total - alpha * R_KA) within its (correctness, internal level)
    cell over the batch of every process, divided by the RMS of those advantages; 0 elsewhere."""
    samples = inputs.samples
    returns = torch.zeros_like(inputs.rewards)
    items = []  # (sample index, step, value, cell)
    for i, s in enumerate(samples):
        if not s.active:
            continue
        for st, rw in zip(s.rollout.steps, s.rollout.rewards or ()):
            if st.statement_start is None:
                continue
            items.append((i, st, rw.total - cfg.reward.alpha * rw.r_ka,
                          int(st.correct) * N_LEVELS + int(st.internal_level) - 1))
    sums, counts = adv_math.cell_sums([v for *_, v, _ in items], [c for *_, c in items], 2 * N_LEVELS)
    reduced = reduce_sum(list(sums) + list(counts), accelerator)
    sums = torch.tensor(reduced[:2 * N_LEVELS], dtype=torch.float64)
    counts = torch.tensor(reduced[2 * N_LEVELS:], dtype=torch.float64)
    adv_steps = adv_math.leave_one_out_advantages([v for *_, v, _ in items], [c for *_, c in items], sums, counts)
    sq, n = reduce_sum([sum(a * a for a in adv_steps), float(len(adv_steps))], accelerator)
    rms = math.sqrt(sq / n) if n else 0.0
    adv = torch.zeros((len(samples), inputs.rewards.shape[1]))
    for (i, st, _, _), a in zip(items, adv_steps):
        adv[i, st.statement_start:st.statement_end] = a / rms if rms > 1e-8 else 0.0
    return Advantages(advantages=adv, returns=returns)
