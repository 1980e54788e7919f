"""Typed rollout records of the PPO stage (method.md section 5).

A `Rollout` is one sampled response of the policy to one question: its generated token ids, the
token spans of its reasoning steps and of their confidence statements, what is known about each
step (expressed level, internal level, correctness), and slots that the trainer fills as it goes
(per-token log-probabilities of the policy and of the reference/SFT model, value estimates, and
per-step reward components). The reward, advantage and loss functions of `rewards`,
`advantages` and `ppo_math` read these records and never import a trainer.

Conventions (shared by every function over these records):

- Token indices are positions in the *generated* tokens (0 = the first token after the prompt);
  spans are half-open, `[start, end)`.
- `logprobs[i]`, `ref_logprobs[i]` are log pi(tokens[i] | prompt, tokens[:i]) under the policy
  and the reference model; `values[i]` is the value head's estimate V(s_i) of the state
  s_i = prompt + tokens[:i] in which token i is generated. All three are 1-D float tensors of
  length `len(tokens)`, or None while not computed.
- Step spans are ordered and do not overlap; a statement span, when present, lies inside its
  step's span (a statement is the clause that ends its sentence, method.md section 1).
- `expressed_level` is the level the statement maps back to (section 3), None when the step has
  no statement or one that maps to no level (a format failure, never filled in).
  `internal_level` is the level of the internal confidence recomputed on the current policy's
  forward pass (section 2). `correct` is y_t in {0, 1}; `Rollout.answer_correct` is a in {0, 1},
  the correctness of the final answer, which applies to the final step.

The records are frozen (`eq=False`: they hold tensors, compared by identity); a stage makes a
new record with `Rollout.with_(...)`, which validates again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmboundary.levels import N_LEVELS
from mmboundary.statements.granularity import answer_level

__all__ = ["N_LEVELS", "Rollout", "RolloutStep", "StepRewards", "answer_rollout", "pad_right"]



def _check_binary(value: object, name: str) -> None:
    if isinstance(value, bool) or value not in (0, 1):
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")


def _check_level(value: object, name: str, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= N_LEVELS:
        raise ValueError(f"{name} must be an integer in 1..{N_LEVELS}"
                         f"{' or None' if optional else ''}, got {value!r}")


@dataclass(frozen=True)
class RolloutStep:
    """One reasoning step of a rollout with its statement.

    - `start`, `end`: the step's token span (the whole sentence, statement included).
    - `statement_start`, `statement_end`: the statement's token span, both None when the step
      has no statement clause.
    - `expressed_level`: 1..5, or None = unparsed (no statement, or one mapping to no level).
    - `internal_level`: 1..5, recomputed on the policy.
    - `correct`: y_t, 0 or 1.
    - `knowledge`: the step judge's matching degree m_t in [0, 1] when the step's truth came
      from matching it to a reference chain (`evaluation.judges`; R_KA = 2 m_t - 1), else None
      (R_KA = 2 y_t - 1).
    """

    start: int
    end: int
    statement_start: int | None
    statement_end: int | None
    expressed_level: int | None
    internal_level: int
    correct: int
    knowledge: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"step span must satisfy 0 <= start < end, got "
                             f"[{self.start}, {self.end})")
        if (self.statement_start is None) != (self.statement_end is None):
            raise ValueError("statement_start and statement_end must both be set or both None")
        if self.statement_start is not None:
            assert self.statement_end is not None
            if not self.start <= self.statement_start < self.statement_end <= self.end:
                raise ValueError(
                    f"statement span [{self.statement_start}, {self.statement_end}) must be "
                    f"non-empty and inside the step span [{self.start}, {self.end})")
        elif self.expressed_level is not None:
            raise ValueError("a step without a statement span cannot have an expressed level")
        _check_level(self.expressed_level, "expressed_level", optional=True)
        _check_level(self.internal_level, "internal_level", optional=False)
        _check_binary(self.correct, "correct")
        if self.knowledge is not None and (isinstance(self.knowledge, bool) or not 0.0 <= self.knowledge <= 1.0):
            raise ValueError(f"knowledge must be a matching degree in [0, 1] or None, got {self.knowledge!r}")

    @property
    def has_statement(self) -> bool:
        return self.statement_start is not None

    @property
    def parsed(self) -> bool:
        """True when the statement maps back to a level."""
        return self.expressed_level is not None


@dataclass(frozen=True)
class StepRewards:
    """The reward components of one step and their configured sum (see `rewards`).

    `total` = alpha * r_ka + beta * r_ec + gamma * r_cs under the `RewardConfig` that made it.
    """

    r_ka: float
    r_ec: float
    r_cs: float
    total: float


@dataclass(frozen=True, eq=False)
class Rollout:
    """One sampled response: tokens, steps, and the slots the trainer fills.

    - `example_id`: the question's id.
    - `prompt_length`: number of prompt tokens before the generated ones.
    - `tokens`: generated token ids.
    - `steps`: the steps, ordered by position, non-overlapping.
    - `answer_correct`: a, 0 or 1 (the final step's knowledge-accuracy target).
    - `logprobs`, `ref_logprobs`, `values`: 1-D float tensors over the generated tokens, or None.
    - `rewards`: one `StepRewards` per step, or None.
    """

    example_id: str
    prompt_length: int
    tokens: tuple[int, ...]
    steps: tuple[RolloutStep, ...]
    answer_correct: int
    logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    rewards: tuple[StepRewards, ...] | None = None

    def __post_init__(self) -> None:
        if self.prompt_length < 0:
            raise ValueError(f"prompt_length must be >= 0, got {self.prompt_length}")
        # Normalise sequences to tuples so the record is immutable.
        object.__setattr__(self, "tokens", tuple(int(t) for t in self.tokens))
        object.__setattr__(self, "steps", tuple(self.steps))
        _check_binary(self.answer_correct, "answer_correct")
        n = len(self.tokens)
        previous_end = 0
        for i, step in enumerate(self.steps):
            if step.start < previous_end:
                raise ValueError(f"{self.example_id}: step {i} starts at {step.start}, before the "
                                 f"end {previous_end} of the previous step (steps must be ordered "
                                 "and must not overlap)")
            if step.end > n:
                raise ValueError(f"{self.example_id}: step {i} ends at {step.end}, past the "
                                 f"{n} generated tokens")
            previous_end = step.end
        for name in ("logprobs", "ref_logprobs", "values"):
            value = getattr(self, name)
            if value is not None and (value.dim() != 1 or value.shape[0] != n):
                raise ValueError(f"{self.example_id}: {name} must be a 1-D tensor of length {n}, "
                                 f"got shape {tuple(value.shape)}")
        if self.rewards is not None:
            object.__setattr__(self, "rewards", tuple(self.rewards))
            if len(self.rewards) != len(self.steps):
                raise ValueError(f"{self.example_id}: {len(self.rewards)} step rewards for "
                                 f"{len(self.steps)} steps")

    def __len__(self) -> int:
        return len(self.tokens)

    def with_(self, **changes: object) -> Rollout:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)


def answer_rollout(rollout: Rollout) -> Rollout:
    """The rollout of an answer-granularity response (`statements.granularity: answer`, the
    SaySelf-style baseline): one step spanning the whole chain, whose statement is the final
    step's, whose correctness is the answer's (`answer_correct`) and whose internal level is the
    answer's (`statements.granularity.answer_level` of the steps'), so the rewards score one
    answer-level statement per response. A rollout without steps is returned unchanged."""
    if not rollout.steps:
        return rollout
    first, last = rollout.steps[0], rollout.steps[-1]
    step = RolloutStep(start=first.start, end=last.end, statement_start=last.statement_start,
                       statement_end=last.statement_end, expressed_level=last.expressed_level,
                       internal_level=answer_level([s.internal_level for s in rollout.steps]),
                       correct=rollout.answer_correct)
    return rollout.with_(steps=(step,), rewards=None)


def pad_right(sequences: Sequence[torch.Tensor], length: int | None = None,
              value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D tensors into a [B, T] batch padded on the right with `value`.

    Returns the batch and a bool mask [B, T] that is True on real positions. `length` defaults
    to the longest sequence. All sequences must share one dtype.
    """
    if not sequences:
        raise ValueError("pad_right needs at least one sequence")
    longest = max(int(s.shape[0]) for s in sequences)
    length = longest if length is None else length
    if length < longest:
        raise ValueError(f"length {length} is shorter than the longest sequence ({longest})")
    first = sequences[0]
    batch = torch.full((len(sequences), length), value, dtype=first.dtype, device=first.device)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool, device=first.device)
    for i, s in enumerate(sequences):
        if s.dim() != 1:
            raise ValueError(f"sequence {i} must be 1-D, got shape {tuple(s.shape)}")
        batch[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return batch, mask
