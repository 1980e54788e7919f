"""Stage `rl`: PPO with per-step rewards that calibrates the stated confidence (method.md section 5).

A thin, hand-written loop on accelerate over the pure functions of `rollout`, `rewards`,
`advantages` and `ppo_math`. Per iteration:

1. take the next `rollout_batch_size` train questions of a seeded order (each process a disjoint
   contiguous shard of them);
2. sample `samples_per_question` responses per question from the current policy
   (`VLM.generate_ids`, plain tempered sampling, seeded by (seed, iteration, process));
3. parse each response into steps with statements (`statements.chain_format.parse_chains` + the
   run's statement mapper), check each step and the answer (`generation.expressed_chain_record`:
   the benchmark's exact checker), and recompute each step's INTERNAL level on the current policy
   (`confidence.estimator.estimate_signals` on the step text without its statement, then
   `confidence.fusion.score_steps` with the run's saved normaliser and levels);
4. turn character spans into spans of the GENERATED tokens (`build_rollout`) and make `Rollout`
   records;
5. one teacher-forced pass of the policy (old log-probs and values) and one of the frozen SFT
   reference (reference log-probs), over exactly the generated token ids (`response_inputs`);
6. rewards (`rewards.assign_rewards`, `rewards.token_rewards` with the KL controller's
   coefficient) and advantages (`advantages.gae` + `whiten`, or the critic-free group
   estimator), in `prepare_batch`;
7. `ppo_epochs` passes over shuffled minibatches (`ppo_update`): clipped policy loss
   + vf_coef * clipped value loss (- ent_coef * entropy), the policy loss over all generated
   tokens or only the statement tokens (`loss_on`), gradient clipping; a non-finite loss skips
   the step (on every process) and is counted.

Logged per iteration (Python logging, `metrics.jsonl` in the stage folder, TensorBoard when it is
installed): mean R_KA / R_EC / R_CS / total per step, reward per response, KL to the reference,
KL coefficient, entropy, value loss, policy loss, clip fractions, the level histogram of the
expressed confidence (and of the internal one), parse rate, answer and step accuracy.

Resumable: every `save_every` iterations the trainable weights and the value head
(safetensors), the optimiser / scheduler / KL-controller state, the iteration and the metric
history (`torch.save` of tensors and plain values, read back with `weights_only=True`) go to
`checkpoints/iter-N` through a temporary folder renamed into place. Randomness is derived from
(seed, iteration, process) at the start of every iteration and the question order from (seed,
pass over the data), so a resumed run samples exactly what an uninterrupted one would.

Distributed (`accelerate launch --multi_gpu --num_processes N`, also `Accelerator(cpu=True)` on
gloo): every process takes `rollout_batch_size / N` questions, so every process holds the same
number of rollouts and takes the same number of optimiser steps. Losses are token means over the
GLOBAL minibatch (each process scales its local token sum by N / global token count, and DDP
averages the gradients), advantages are whitened over the global batch, and statistics are
reduced over all processes, so N processes with a per-process batch b compute what one process
computes with batch N * b. Only the main process writes files.

Token alignment **[choice]**: the actions are exactly the sampled token ids (the eos included when
one was sampled; nothing is appended). Sampled ids are not always the tokenizer's canonical
tokenization of the decoded text, so `VLM.encode` (which tokenises response TEXT and appends an
eos) is used for the prompt only, and the sampled ids are appended to it (`response_inputs`).
Characters are mapped to sampled tokens through the decoded text of each prefix
(`token_char_ends`). Internal confidence is computed, as everywhere in the project, on the
canonical tokenization of the step text (`estimate_signals`).

`algorithm: expected` replaces steps 2 and 5-7 by the exact expected per-step reward over the
five levels on the greedy chains (`training/level_objective.py`, `training/rl_levels.py`).

Departures from the paper (settings unconfirmed there): the tiny default model is trained in
full (`finetune`); the learning rate is the paper's 1e-5, not yet tuned on the tiny model.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmboundary.training.advantages import broadcast_step_values, gae, group_normalized_step_advantages, whiten
from mmboundary.training.ppo_math import batch_token_mask, entropy_from_logits, k3_kl_sum, policy_loss, value_loss
from mmboundary.training.rewards import (
    AdaptiveKLController,
    FixedKLController,
    RewardConfig,
    assign_rewards,
    token_rewards,
)
from mmboundary.training.rollout import N_LEVELS, Rollout, RolloutStep, pad_right
from mmboundary.training.value_head import PolicyWithValue, ValueHead, hidden_size_of

log = logging.getLogger("mmboundary.rl")

__all__ = [
    "PPOBatch",
    "RLConfig",
    "RewardWeights",
    "RolloutContext",
    "Sample",
    "build_rollout",
    "char_spans_to_token_spans",
    "make_rl_accelerator",
    "ppo_loss",
    "ppo_update",
    "prepare_batch",
    "response_inputs",
    "response_scores",
    "samples_from_ids",
    "run_rl_stage",
    "token_char_ends",
    "train_rl",
]


# --- configuration ------------------------------------------------------------------------------

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RewardWeights(_Section):
    """The per-step reward's weights and options (`rewards.RewardConfig`, method.md section 5)."""

    alpha: float = Field(1.0, description="Weight of R_KA (knowledge accuracy). Paper: 1; 0 = the 'w/o R_KA' ablation.")
    beta: float = Field(1.0, description="Weight of R_EC (expected calibration). Paper: 1; 0 = 'w/o R_EC'.")
    gamma: float = Field(1.0, description="Weight of R_CS (self-calibration). Paper: 1; 0 = 'w/o R_CS'.")
    unparsed_reward: float = Field(
        -1.0, description="R_EC and R_CS of a step whose statement maps to no level (method.md: -1).")
    final_ec_target: Literal["answer", "step"] = Field(
        "answer", description="**[choice]** What the final step's R_EC is scored against: the answer "
        "correctness a ('answer', the answer-level confidence that ECE evaluates) or its own y_T ('step').")
    cs_scale: Literal["level", "probability"] = Field(
        "level", description="**[choice]** The scale of R_CS: 'level', 1 - 2|L_expr - L_int|/4 (one level of "
        "disagreement costs 0.5, more than R_EC can gain, so the optimum is the internal level), or "
        "'probability', 1 - 2(p(L_expr) - p(L_int))^2, R_EC's scale (one level costs 0.08; the expected "
        "optimum is the level nearest the mean of the step's chance of being right and the internal "
        "confidence). `training/rewards.py`.")

    def to_reward_config(self) -> RewardConfig:
        return RewardConfig(alpha=self.alpha, beta=self.beta, gamma=self.gamma,
                            unparsed_reward=self.unparsed_reward, final_ec_target=self.final_ec_target,
                            cs_scale=self.cs_scale)


class RLConfig(_Section):
    """Stage `rl`: PPO from the SFT model with per-step rewards (method.md section 5).

    Batch sizes: `rollout_batch_size` questions per iteration over ALL processes (each takes an
    equal share), `samples_per_question` responses each; `minibatch_size` responses per
    optimiser step PER PROCESS."""

    rollout_batch_size: int = Field(
        16, gt=0, description="Questions per PPO iteration, over all processes (must be divisible by "
        "the number of processes). **[choice]** 16, as the paper's batch.")
    samples_per_question: int = Field(3, gt=0, description="Sampled responses per question (paper: 3).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts; the log-probs, "
                               "ratios and KL are computed for the same tempered distribution (the policy "
                               "that acted). With `sampling='statements'` a temperature above 1 explores rarely "
                               "said levels while greedy evaluation, whose argmax it does not change, reads "
                               "the same model. **[choice]** 1.0.")
    sampling: Literal["all", "statements"] = Field(
        "statements", description="**[choice]** 'statements' (measured: rollouts sampled at temperature 1 were "
        "right 38% of the time against 53% for greedy chains, so RL learnt to state less confidence than greedy "
        "steps deserve). "
        "What the rollouts sample: 'all' tokens (plain PPO), or only the 'statements' "
        "with the reasoning decoded greedily as at evaluation (`training.sampling`; needs "
        "`loss_on='statements'`).")
    max_new_tokens: int = Field(128, gt=0, description="Longest sampled response. **[choice]** 128, as "
                                "`generation.max_new_tokens` (the default benchmark's chains with statements "
                                "are up to about 100 tokens).")
    iterations: int = Field(40, gt=0, description="PPO iterations (rollout batch + update). **[choice]** 40 "
                            "on the tiny default (about 4 minutes on 2 cores; docs/results/rl.md).")
    ppo_epochs: int = Field(2, gt=0, description="Passes over each rollout batch. **[choice]** 2.")
    minibatch_size: int = Field(8, gt=0, description="Responses per optimiser step, per process. **[choice]** 8.")
    forward_batch_size: int = Field(
        16, gt=0, description="Responses per no-grad pass (sampling, old/reference log-probs, signals).")
    lr: float = Field(
        3e-5, ge=0, description="AdamW learning rate (constant after warm-up). **[choice]** 3e-5, measured on the "
        "tiny default (1e-4 lost up to 6 points of accuracy with the paper's rewards; docs/results/rl.md); the "
        "paper's (unconfirmed) 1e-5 for 7B models with LoRA.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay. **[choice]** 0: PPO stays near the "
                                "SFT model through the KL penalty, not through decay towards 0.")
    warmup_steps: int = Field(0, ge=0, description="Optimiser steps of linear learning-rate warm-up, then constant.")
    clip_eps: float = Field(0.2, gt=0, description="PPO ratio clipping epsilon (Schulman et al. 2017: 0.2).")
    value_clip: float | None = Field(
        0.2, gt=0, description="Value clipping range around the old values, in reward units (None: off). "
        "**[choice]** 0.2 as in PPO's reference implementation.")
    vf_coef: float = Field(0.5, ge=0, description="Weight of the value loss. **[choice]** 0.5.")
    ent_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus (0: off, entropy still logged).")
    gae_gamma: float = Field(1.0, ge=0, le=1, description="Discount over tokens. **[choice]** 1: one response is "
                             "one short episode.")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE lambda. **[choice]** 0.95.")
    whiten_advantages: bool = Field(
        True, description="Whiten GAE advantages over the batch (all processes); the group estimator is "
        "already normalised per question and is never whitened.")
    kl_coef: float = Field(0.05, ge=0, description="(Initial) coefficient of the per-token KL penalty against the "
                           "SFT model. **[choice]** 0.05.")
    kl_adaptive: bool = Field(False, description="Adapt the KL coefficient towards `kl_target` (Ziegler et al. "
                              "2019) instead of keeping it fixed.")
    kl_target: float = Field(6.0, gt=0, description="Target KL per response (nats) of the adaptive controller.")
    kl_horizon: float = Field(10000.0, gt=0, description="Horizon (responses) of the adaptive controller.")
    reward: RewardWeights = Field(default_factory=RewardWeights)
    empty_response_reward: float = Field(
        -3.0, description="**[choice]** Reward of a response with no step at all, on its last token: the "
        "lowest a step can get with the default weights (-alpha - beta - gamma), so that saying nothing "
        "never beats a badly calibrated step.")
    unknown_step_target: Literal["answer", "wrong"] = Field(
        "answer", description="**[choice]** y_t of a step whose truth cannot be decided (no scene to check "
        "against): the answer correctness a ('answer') or 0 ('wrong'). The built-in benchmark decides "
        "every step.")
    algorithm: Literal["ppo", "expected"] = Field(
        "ppo", description="'ppo': PPO on sampled statements (the paper; `advantage` says how advantages are "
        "made). 'expected': the exact expected per-step reward over the five levels on the greedy chains "
        "(`training/level_objective.py`): every level's reward is known once the step is written, so each "
        "step's level distribution gets the all-actions gradient, with no sampling noise; the KL to the SFT "
        "model is taken between level distributions (`kl_coef`) and the reasoning is held by `anchor_coef`. "
        "`samples_per_question`, `temperature`, `sampling`, `advantage`, the clipping and the value head are "
        "not used.")
    level_phrasings: int = Field(
        1, gt=0, description="With algorithm 'expected': statements per level whose probabilities make the "
        "level's (the first N of each level's pool; a numeric mapper has one). **[choice]** 1, as the tiny "
        "default's SFT data (`sft_data.statements_per_level`); set it to that value for another run.")
    level_gradient: Literal["exact", "natural", "floored"] = Field(
        "exact", description="With algorithm 'expected': 'exact', the gradient of the expected reward "
        "(-q_l (R_l - E_q R) per level logit: a level the policy rarely states barely moves), or 'natural', "
        "each level logit moved by its centred advantage R_l - E_q R, the natural policy gradient of a "
        "softmax (`level_objective.expected_level_loss`). **[choice]** 'exact' (measured: 'natural' pushed "
        "the bad levels' statements down without bound, the parse rate fell to 0.77 and accuracy by 20 "
        "points; docs/results/rl.md). 'floored': the exact gradient with each better-than-average level "
        "weighted by at least `level_floor` (rare better levels rise, rare worse ones stop being pushed).")
    level_floor: float = Field(
        0.05, ge=0, le=1, description="With level_gradient 'floored': the least weight of a level whose reward "
        "is above the step's expected reward. **[choice]** 0.05 (about one step in twenty).")
    level_temperature: float = Field(
        1.0, gt=0, description="With algorithm 'expected' and the exact gradient: the expectation is taken "
        "under softmax(level log-probs / tau), so that rarely stated levels keep a gradient; the same best "
        "level maximises it. **[choice]** 1.")
    advantage: Literal["gae", "group", "statement"] = Field(
        "gae", description="'gae': GAE over tokens with the value head (the paper); 'group': critic-free, "
        "step returns normalised over each question's samples, the KL penalty then added to the loss; "
        "'statement': critic-free, for `loss_on='statements'` only: each statement's calibration reward "
        "(beta R_EC + gamma R_CS) minus the mean of the batch's other steps with the same correctness and "
        "internal level (`advantages.leave_one_out_advantages`), divided by the batch's RMS; the KL penalty "
        "is added to the loss.")
    anchor_coef: float = Field(
        1.0, ge=0, description="With `loss_on='statements'`: weight of a KL(policy || SFT) term (k3 estimator, "
        "token mean) on every generated token OUTSIDE the statements, which keeps the reasoning where the "
        "SFT model had it (the weights are shared, so a statement-only loss moves the reasoning too). "
        "**[choice]** 1.0; 0 = off.")
    loss_on: Literal["all", "statements"] = Field(
        "statements", description="**[choice]** 'statements' (measured: with every token in the loss the tiny "
        "model's reasoning drifted and lost up to 11 points of accuracy). "
        "Tokens of the policy loss: every generated token, or only the statement tokens "
        "(the reasoning is then not trained, only kept near the SFT model by `anchor_coef`). The value loss always uses "
        "every generated token.")
    value_grad_to_policy: bool = Field(
        False, description="**[choice]** False: with the loss on statements only, the value loss would be the "
        "one term that trains the shared trunk on every token. "
        "Whether the value loss also trains the shared trunk (True, PPO's usual shared "
        "body) or only the value head.")
    value_head_init_std: float = Field(1e-3, ge=0, description="Std of the value head's initial weights.")
    finetune: Literal["full", "lora"] = Field(
        "full", description="'full': every weight; 'lora': PEFT LoRA adapters (as in `sft`), merged into the "
        "weights when saved; the reference is then the model with the adapters disabled.")
    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout. **[choice]** 0: dropout would make "
                                "the PPO ratio differ from 1 before any update.")
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get LoRA adapters (language model only).")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clipping.")
    max_nonfinite_in_a_row: int | None = Field(
        3, gt=0, description="Stop (errors.NonFiniteError, the last checkpoint kept) after this many "
        "optimiser steps in a row were skipped for a non-finite loss or gradient norm (None: never stop).")
    save_every: int = Field(10, gt=0, description="Iterations between resumable checkpoints.")
    init: Literal["sft", "vanilla"] = Field(
        "sft", description="The model RL starts from and is kept near (KL): the SFT warm-up model (the method) "
        "or the vanilla model ('vanilla': the paper's DRL baseline, RL without the warm-up).")
    train_examples: int | None = Field(None, gt=0, description="Use only the first N train questions (None: all).")
    questions: Literal["train", "fresh"] = Field(
        "train", description="The questions RL rolls out on: the 'train' split (the questions the vanilla and SFT "
        "models were trained on), or, on the built-in benchmark only, 'fresh' ones drawn for this stage "
        "(`iterations * rollout_batch_size` in-distribution questions from benchmark seed 10000 + data.benchmark.seed, "
        "a stream no split uses; written to `rl/questions/`), so that the rewards score the model on questions it "
        "has not seen, as the test split does. **[choice]** 'train'.")
    seed: int | None = Field(None, description="Seed of question order and sampling (None: the run's seed).")

    @model_validator(mode="after")
    def _statement_needs_statement_loss(self):
        if self.advantage == "statement" and self.loss_on != "statements":
            raise ValueError("advantage 'statement' gives advantages to statement tokens only: set "
                             "loss_on: statements")
        if "sampling" not in self.model_fields_set and self.loss_on == "all":
            object.__setattr__(self, "sampling", "all")  # whole-response PPO samples whole responses
        if self.algorithm == "expected" and self.loss_on != "statements":
            raise ValueError("algorithm 'expected' trains the statements only (the anchor keeps the rest): "
                             "set loss_on: statements")
        if self.sampling == "statements" and self.loss_on != "statements":
            raise ValueError("sampling 'statements' decodes the reasoning greedily, so its tokens are not "
                             "the policy's samples: set loss_on: statements")
        return self


# --- rollout records from sampled tokens --------------------------------------------------------

def token_char_ends(tokenizer, ids: Sequence[int]) -> tuple[str, list[int]]:
    """The decoded text of sampled ids and, per token, the end (exclusive) of the characters it
    produced in that text.

    Text = `decode(ids, skip_special_tokens=True)` (no clean-up). Token i's end is the length of
    the longest common prefix of the text and the decoded prefix ids[:i+1] (made non-decreasing),
    so a token that emits half a UTF-8 character, or a special token, produces no character and
    the token that completes it does; the last end is always len(text)."""
    ids = [int(i) for i in ids]
    kw = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
    text = tokenizer.decode(ids, **kw)
    prefixes = tokenizer.batch_decode([ids[: i + 1] for i in range(len(ids))], **kw) if ids else []
    ends, best = [], 0
    for p in prefixes:
        n = 0
        limit = min(len(p), len(text))
        while n < limit and p[n] == text[n]:
            n += 1
        best = max(best, n)
        ends.append(best)
    if ends:
        ends[-1] = len(text)
    return text, ends


def char_spans_to_token_spans(ends: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token span [i, j) of each character span [a, b): from the token that produced character a
    to the token that produced character b - 1 (`ends` from `token_char_ends`). An empty
    character span gives an empty token span (k, k)."""
    out = []
    for a, b in spans:
        if b <= a:
            k = bisect_right(ends, a)
            out.append((k, k))
            continue
        out.append((bisect_right(ends, a), bisect_left(ends, b) + 1))
    return out


def build_rollout(example_id: str, prompt_length: int, ids: Sequence[int], ends: Sequence[int], parsed,
                  correct: Sequence[int], internal_levels: Sequence[int], answer_correct: int) -> tuple[Rollout, int]:
    """A `Rollout` of one sampled response.

    - `ids`: the sampled token ids; `ends`: their character ends (`token_char_ends`) in the text
      that `parsed` (a `statements.chain_format.ParsedChain`) was parsed from;
    - `correct[t]`, `internal_levels[t]`: y_t in {0, 1} and the internal level of parsed step t.
    A step's token span covers its whole sentence (statement included), its statement span the
    statement clause (final punctuation excluded); the reward sits on the statement's last token.
    Tokens that produce only whitespace before a sentence belong to it (the rule of
    `confidence.spans`), so consecutive sentences own contiguous tokens.
    A parsed statement that owns no token of its own is treated as no statement (unparsed); a
    sentence that owns no token (it shares its only token with the previous one) is left out.
    Returns the rollout and the number of steps left out."""
    sentence_spans = char_spans_to_token_spans(ends, [p.span for p in parsed.steps])
    statement_spans = char_spans_to_token_spans(
        ends, [p.statement_span if p.statement_span is not None else (0, 0) for p in parsed.steps])
    steps, dropped, previous_end = [], 0, 0
    text = parsed.response
    for t, p in enumerate(parsed.steps):
        start, end = sentence_spans[t]
        start = max(start, previous_end)
        gap_from = ends[previous_end - 1] if previous_end > 0 else 0
        gap_to = ends[start - 1] if start > 0 else 0
        if start > previous_end and text[gap_from:gap_to].strip() == "":
            start = previous_end  # whitespace-only tokens before a sentence are its own (as in confidence.spans)
        if end <= start:
            dropped += 1
            continue
        s_start = s_end = None
        level = p.level
        if p.statement_span is not None:
            a, b = statement_spans[t]
            a = max(a, start)
            b = min(b, end)
            if b > a:
                s_start, s_end = a, b
        if s_start is None:
            level = None
        steps.append(RolloutStep(start=start, end=end, statement_start=s_start, statement_end=s_end,
                                 expressed_level=level, internal_level=int(internal_levels[t]),
                                 correct=int(correct[t])))
        previous_end = end
    rollout = Rollout(example_id=example_id, prompt_length=prompt_length, tokens=tuple(ids), steps=tuple(steps),
                      answer_correct=int(answer_correct))
    return rollout, dropped


@dataclass(eq=False)
class Sample:
    """One sampled response with what its forward passes need.

    `active` is False when its internal confidence could not be computed (a step beyond the
    model's max_length): it stays in the batch (every process keeps the same number of
    samples) but no loss reads it. `group` numbers the question within the process's batch."""

    rollout: Rollout
    prompt: str
    image: Any
    text: str
    group: int
    active: bool = True
    expressed: tuple[int | None, ...] = ()
    internal: tuple[int, ...] = ()
    answer_correct: int = 0
    dropped_steps: int = 0
    parsed: Any = None
    correct: tuple[int, ...] = ()


@dataclass
class RolloutContext:
    """What turns responses into rollout records: the statement mapper (backward mapping), the
    run's fitted normaliser and levels, the fusion config and the signals in use, the CLIP model
    and sentence similarity the signals need (None when a signal that needs them is not used)."""

    mapper: Any
    normalizer: Any
    levels: Any
    fusion: Any = None
    signals: tuple[str, ...] = ("lnlp", "mte", "token_sar", "clip_score")
    clip: Any = None
    similarity: Any = None
    estimate_batch_size: int = 16
    granularity: str = "step"  # `statements.granularity`: 'answer' scores one statement per response

    @classmethod
    def from_run(cls, run) -> RolloutContext:
        """The context of a run: its statement mapper, `estimate/normalizer.json` and
        `estimate/levels.json`, its fusion config, CLIP (`base/clip` or `clip.path`) and TokenSAR's
        sentence similarity."""
        from mmboundary.confidence.fusion import Levels, Normalizer
        from mmboundary.pipeline import make_statement_mapper

        cfg = run.config
        est = run.require("estimate")
        ecfg = cfg.estimate
        clip = similarity = None
        if "clip_score" in ecfg.signals:
            from mmboundary.models import load_clip

            clip = load_clip(cfg.clip.path or run.require("base") / "clip")
        if "token_sar" in ecfg.signals:
            from mmboundary.confidence.similarity import SentenceSimilarity

            similarity = SentenceSimilarity(ecfg.similarity_model, kind=ecfg.similarity_kind)
        return cls(mapper=make_statement_mapper(cfg), normalizer=Normalizer.load(est / "normalizer.json"),
                   levels=Levels.load(est / "levels.json"), fusion=ecfg.fusion, signals=tuple(ecfg.signals),
                   clip=clip, similarity=similarity, estimate_batch_size=ecfg.batch_size,
                   granularity=cfg.statements.granularity)


def _internal_levels(vlm, ctx: RolloutContext, examples: Mapping[str, Any], chains) -> list[list[int] | None]:
    """Internal level of every step of each chain on the current policy (None for a chain
    where a step lacks a signal in use, e.g. beyond max_length)."""
    import warnings

    from mmboundary.confidence.estimator import estimate_signals
    from mmboundary.confidence.fusion import score_steps

    if ctx.clip is not None:
        ctx.clip.model.to(vlm.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = estimate_signals(vlm, ctx.clip, ctx.similarity, examples, chains,
                                   batch_size=ctx.estimate_batch_size, signals=ctx.signals, progress=False)
    out: list[list[int] | None] = []
    k = 0
    for chain in chains:
        n = len(chain.steps)
        mine = signals[k:k + n]
        k += n
        if not n:
            out.append([])
            continue
        try:
            out.append([c.level for c in score_steps(mine, ctx.normalizer, ctx.levels, ctx.fusion)])
        except ValueError:
            out.append(None)
    return out


def _seed_for(seed: int, iteration: int, rank: int) -> int:
    return (int(seed) * 1_000_003 + iteration * 7_919 + rank * 104_729) % (2**63 - 1)


def samples_from_ids(vlm, items: Sequence[tuple[int, Any]], ids: Sequence[Sequence[int]], ctx: RolloutContext,
                     cfg: RLConfig) -> list[Sample]:
    """`Sample`s of sampled responses: `items[i] = (group, example)` answered by token ids
    `ids[i]`. Parses statements (`ctx.mapper`), checks steps and answer
    (`expressed_chain_record`), recomputes internal levels on `vlm`, builds the rollouts."""
    from mmboundary.data.images import load_image
    from mmboundary.generation import expressed_chain_record
    from mmboundary.statements.chain_format import parse_chains

    examples = {ex.id: ex for _, ex in items}
    images = {i: load_image(ex.image) for i, ex in examples.items()}
    decoded = [token_char_ends(vlm.tokenizer, x) for x in ids]
    texts = [t for t, _ in decoded]
    parsed = parse_chains(texts, ctx.mapper)
    chains = [expressed_chain_record(ex, t, p) for (_, ex), t, p in zip(items, texts, parsed)]
    internal = _internal_levels(vlm, ctx, examples, chains)
    from mmboundary.training.rollout import answer_rollout
    prompts = {i: vlm.prompt_text(ex.question, ex.choices) for i, ex in examples.items()}
    samples = []
    for (g, ex), x, (text, ends), p, chain, lv in zip(items, ids, decoded, parsed, chains, internal):
        a = int(chain.answer_correct)
        active = lv is not None
        levels = lv if lv is not None else [1] * len(p.steps)
        correct = [int(s.correct) if s.correct is not None else (a if cfg.unknown_step_target == "answer" else 0)
                   for s in chain.steps]
        rollout, dropped = build_rollout(ex.id, 0, x, ends, p, correct, levels, a)
        if ctx.granularity == "answer":  # one answer-level statement per response (SaySelf-style)
            rollout = answer_rollout(rollout)
        samples.append(Sample(rollout=rollout, prompt=prompts[ex.id], image=images[ex.id], text=text, group=g,
                              active=active, expressed=tuple(s.level for s in p.steps),
                              internal=tuple(levels) if active else (), answer_correct=a, dropped_steps=dropped,
                              parsed=p, correct=tuple(correct)))
    return samples


@torch.no_grad()
def collect_samples(vlm, examples: Sequence[Any], ctx: RolloutContext, cfg: RLConfig) -> list[Sample]:
    """Sample `cfg.samples_per_question` responses per example with the current policy and turn
    them into `Sample`s (`samples_from_ids`; no log-probs yet). Sampling uses the torch random
    state as it is (the caller seeds it)."""
    from mmboundary.data.images import load_image

    greedy = cfg.algorithm == "expected"
    k = 1 if greedy else cfg.samples_per_question
    items = [(g, ex) for g, ex in enumerate(examples) for _ in range(k)]
    images = {ex.id: load_image(ex.image) for ex in examples}
    ids: list[list[int]] = []
    flags = None
    if cfg.sampling == "statements" and not greedy:
        from mmboundary.training.sampling import token_flags

        flags = token_flags(vlm.tokenizer, int(vlm.model.get_output_embeddings().weight.shape[0]))
    for i in range(0, len(items), cfg.forward_batch_size):
        chunk = [ex for _, ex in items[i:i + cfg.forward_batch_size]]
        processors = None
        if flags is not None:
            from transformers import LogitsProcessorList

            from mmboundary.training.sampling import StatementSampling

            processors = LogitsProcessorList([StatementSampling(*flags)])
        ids += vlm.generate_ids([ex.question for ex in chunk], [ex.choices for ex in chunk],
                                [images[ex.id] for ex in chunk], max_new_tokens=cfg.max_new_tokens,
                                do_sample=not greedy, temperature=cfg.temperature, logits_processor=processors)
    return samples_from_ids(vlm, items, ids, ctx, cfg)


# --- teacher-forced passes over the sampled tokens ----------------------------------------------

def response_inputs(vlm, prompts: Sequence[str], images: Sequence[Any],
                    token_lists: Sequence[Sequence[int]]) -> tuple[dict[str, Any], list[int]]:
    """Model inputs of prompt + exactly the given response token ids (right padding; no eos
    appended), and the number of prompt tokens of each row.

    The prompt part comes from `VLM.encode` (image tokens expanded by the processor); per-token
    fields other than input_ids (e.g. Qwen2-VL's mm_token_type_ids) get 0 on response tokens,
    as `VLM.encode` does."""
    enc = vlm.encode(list(prompts), list(images), padding_side="right")
    mask = enc["attention_mask"].bool()
    n_prompt = [int(n) for n in mask.sum(1).tolist()]
    per_token = [k for k, v in enc.items() if torch.is_tensor(v) and v.shape == mask.shape and k != "attention_mask"]
    width = max(p + len(t) for p, t in zip(n_prompt, token_lists))
    device = mask.device
    data: dict[str, Any] = {}
    for key in per_token:
        src = enc[key]
        fill = vlm.pad_token_id if key == "input_ids" else 0
        out = torch.full((len(prompts), width), fill, dtype=src.dtype, device=device)
        for i, (p, toks) in enumerate(zip(n_prompt, token_lists)):
            out[i, :p] = src[i, :p]
            if key == "input_ids" and len(toks):
                out[i, p:p + len(toks)] = torch.tensor(list(toks), dtype=src.dtype, device=device)
        data[key] = out
    attn = torch.zeros((len(prompts), width), dtype=enc["attention_mask"].dtype, device=device)
    for i, (p, toks) in enumerate(zip(n_prompt, token_lists)):
        attn[i, :p + len(toks)] = 1
    data["attention_mask"] = attn
    for key, v in enc.items():
        if key not in data:
            data[key] = v
    return data, n_prompt


def response_scores(logits: torch.Tensor, values: torch.Tensor | None, prompt_lengths: Sequence[int],
                    token_lists: Sequence[Sequence[int]], with_entropy: bool = False, temperature: float = 1.0):
    """Per response token: log-prob [B, L], value [B, L] (None without values), entropy [B, L]
    (None unless asked) and the validity mask [B, L] (right padded, L = longest response).

    Token j of row b sits at position p_b + j; it is predicted by the logits at p_b + j - 1, and
    its state's value V(s_j) is the value at that same position. `temperature`: the scores are
    those of the tempered distribution softmax(logits / temperature), the one rollouts sample from,
    so PPO's ratios and the KL are those of the policy that acted."""
    batch = len(token_lists)
    length = max(1, max(len(t) for t in token_lists))
    device = logits.device
    pos = torch.zeros((batch, length), dtype=torch.long, device=device)
    toks = torch.zeros((batch, length), dtype=torch.long, device=device)
    mask = torch.zeros((batch, length), dtype=torch.bool, device=device)
    for b, (p, t) in enumerate(zip(prompt_lengths, token_lists)):
        n = len(t)
        pos[b, :n] = torch.arange(p - 1, p - 1 + n, device=device)
        toks[b, :n] = torch.tensor(list(t), dtype=torch.long, device=device)
        mask[b, :n] = True
    sel = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).float()
    if temperature != 1.0:
        sel = sel / temperature
    logp = torch.log_softmax(sel, dim=-1).gather(-1, toks.unsqueeze(-1)).squeeze(-1)
    logp = torch.where(mask, logp, torch.zeros_like(logp))
    vals = None
    if values is not None:
        vals = torch.where(mask, values.gather(1, pos).float(), torch.zeros_like(logp))
    ent = entropy_from_logits(sel) if with_entropy else None
    return logp, vals, ent, mask


def reference_logits(model, reference_model, inputs: Mapping[str, Any], adapter_off: bool = False) -> torch.Tensor:
    """Logits of the frozen reference (the SFT model) on `inputs`: `reference_model` in eval mode,
    or, with LoRA (`adapter_off`), the policy `model` with its adapters disabled."""
    if adapter_off:
        with model.disable_adapter():
            return model(**inputs, use_cache=False).logits
    reference_model.eval()
    return reference_model(**inputs, use_cache=False).logits


@torch.no_grad()
def score_samples(policy_value, vlm, reference_model, samples: Sequence[Sample], batch_size: int,
                  reference_is_adapter_off: bool = False, temperature: float = 1.0) -> list[Sample]:
    """Fill each sample's rollout with the policy's log-probs and values and the reference's
    log-probs (teacher-forced over exactly the sampled tokens, in eval mode)."""
    out = []
    model = policy_value.model
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        tokens = [s.rollout.tokens for s in chunk]
        inputs, n_prompt = response_inputs(vlm, [s.prompt for s in chunk], [s.image for s in chunk], tokens)
        was_training = policy_value.training
        policy_value.eval()
        try:
            logits, values = policy_value(**inputs)
            logp, vals, _, _ = response_scores(logits, values, n_prompt, tokens, temperature=temperature)
            ref_logits = reference_logits(model, reference_model, inputs, reference_is_adapter_off)
            ref_logp, _, _, _ = response_scores(ref_logits, None, n_prompt, tokens, temperature=temperature)
        finally:
            policy_value.train(was_training)
        for b, s in enumerate(chunk):
            n = len(s.rollout)
            out.append(_replace(s, rollout=s.rollout.with_(
                logprobs=logp[b, :n].cpu(), values=vals[b, :n].cpu(), ref_logprobs=ref_logp[b, :n].cpu(),
                prompt_length=int(n_prompt[b]))))
    return out


def _replace(sample: Sample, **changes) -> Sample:
    import dataclasses

    return dataclasses.replace(sample, **changes)


# --- rewards and advantages ---------------------------------------------------------------------

@dataclass(eq=False)
class PPOBatch:
    """One process's rollout batch, ready for PPO: [B, L] tensors (right padded) on the CPU.

    `rewards`: the per-token reward GAE receives (step totals on their statements' last tokens
    + KL penalty; zeros in 'group' mode, where the KL goes into the loss); `score`: its step
    part alone; `policy_mask`: tokens of the policy loss (`loss_on`); `value_mask`: every real
    token of an active sample."""

    samples: list[Sample]
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    ref_logprobs: torch.Tensor
    rewards: torch.Tensor
    score: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    policy_mask: torch.Tensor
    value_mask: torch.Tensor
    kl_coef: float
    stats: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)


def _global_whiten(x: torch.Tensor, mask: torch.Tensor, accelerator) -> torch.Tensor:
    """`advantages.whiten` over the rows of every process (each has the same number of rows)."""
    if accelerator is None or accelerator.num_processes == 1:
        return whiten(x, mask) if bool(mask.any()) else x
    device = accelerator.device
    length = torch.tensor([x.shape[1]], device=device)
    longest = int(accelerator.gather(length).max())
    pad = longest - x.shape[1]
    xp = torch.nn.functional.pad(x, (0, pad)).to(device)
    mp = torch.nn.functional.pad(mask, (0, pad)).to(device)
    xs, ms = accelerator.gather(xp), accelerator.gather(mp)
    if not bool(ms.any()):
        return x
    white = whiten(xs, ms)
    rows = x.shape[0]
    r = accelerator.process_index
    return white[r * rows:(r + 1) * rows, : x.shape[1]].to(x.device)


def _statement_advantages(samples: Sequence[Sample], reward_cfg: RewardConfig, length: int,
                          accelerator) -> torch.Tensor:
    """[B, L] advantages of the 'statement' estimator: on each parsed-or-not statement clause of an
    active sample, `leave_one_out_advantages` of its calibration reward (total - alpha * R_KA)
    within its (correctness, internal level) cell over the batch of every process, divided by
    the RMS of those advantages; 0 elsewhere."""
    from mmboundary.training.advantages import cell_sums, leave_one_out_advantages

    items = []  # (sample index, step, value, cell)
    for i, s in enumerate(samples):
        if not s.active:
            continue
        for st, rw in zip(s.rollout.steps, s.rollout.rewards or ()):
            if st.statement_start is None:
                continue
            items.append((i, st, rw.total - reward_cfg.alpha * rw.r_ka,
                          int(st.correct) * N_LEVELS + int(st.internal_level) - 1))
    sums, counts = cell_sums([v for *_, v, _ in items], [c for *_, c in items], 2 * N_LEVELS)
    reduced = _reduce_sum(list(sums) + list(counts), accelerator)
    sums = torch.tensor(reduced[:2 * N_LEVELS], dtype=torch.float64)
    counts = torch.tensor(reduced[2 * N_LEVELS:], dtype=torch.float64)
    adv_steps = leave_one_out_advantages([v for *_, v, _ in items], [c for *_, c in items], sums, counts)
    sq, n = _reduce_sum([sum(a * a for a in adv_steps), float(len(adv_steps))], accelerator)
    rms = math.sqrt(sq / n) if n else 0.0
    adv = torch.zeros((len(samples), length))
    for (i, st, _, _), a in zip(items, adv_steps):
        adv[i, st.statement_start:st.statement_end] = a / rms if rms > 1e-8 else 0.0
    return adv


def prepare_batch(samples: Sequence[Sample], cfg: RLConfig, kl_coef: float, accelerator=None) -> PPOBatch:
    """Rewards and advantages of scored samples (`score_samples`).

    Step rewards come from `rewards.assign_rewards` under `cfg.reward`; `rewards.token_rewards`
    places them on tokens and adds the KL penalty with `kl_coef`. A response without steps gets
    `cfg.empty_response_reward` on its last token. 'gae': `advantages.gae` (gamma, lambda)
    with the old values, then `whiten` over the batch of all processes; 'group': step returns
    normalised over each question's samples (`advantages.group_normalized_step_advantages`)
    spread over tokens (`broadcast_step_values`)."""
    reward_cfg = cfg.reward.to_reward_config()
    samples = [_replace(s, rollout=assign_rewards(s.rollout, reward_cfg)) for s in samples]
    rollouts = [s.rollout for s in samples]
    for r in rollouts:
        if r.logprobs is None or r.ref_logprobs is None or r.values is None:
            raise ValueError(f"{r.example_id}: score the samples (score_samples) before prepare_batch")
    gae_kl = kl_coef if cfg.advantage == "gae" else 0.0
    totals, scores = [], []
    for s in samples:
        tr = token_rewards(s.rollout, gae_kl)
        score = tr.score.clone()
        if not s.rollout.steps:
            score[-1] += cfg.empty_response_reward
        scores.append(score)
        totals.append(score + tr.kl)
    finite = [bool(torch.isfinite(t).all()) and bool(torch.isfinite(s.rollout.logprobs).all())
              and bool(torch.isfinite(s.rollout.ref_logprobs).all()) for t, s in zip(totals, samples)]
    if not all(finite):
        log.warning("rl: %d sample(s) with a non-finite reward or log-prob left out of the update",
                    finite.count(False))
        samples = [s if ok else _replace(s, active=False) for s, ok in zip(samples, finite)]
        totals = [torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0) for t in totals]
        scores = [torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0) for t in scores]
        rollouts = [s.rollout for s in samples]
    rewards, real = pad_right(totals)
    score, _ = pad_right(scores)
    old_logp, _ = pad_right([r.logprobs.float() for r in rollouts])
    old_logp = torch.nan_to_num(old_logp, nan=0.0, posinf=0.0, neginf=0.0)
    old_values, _ = pad_right([r.values.float() for r in rollouts])
    old_values = torch.nan_to_num(old_values, nan=0.0, posinf=0.0, neginf=0.0)
    ref_logp, _ = pad_right([r.ref_logprobs.float() for r in rollouts])
    ref_logp = torch.nan_to_num(ref_logp, nan=0.0, posinf=0.0, neginf=0.0)
    active = torch.tensor([s.active for s in samples], dtype=torch.bool).unsqueeze(1)
    value_mask = real & active
    policy_mask = batch_token_mask(rollouts, length=real.shape[1], which=cfg.loss_on) & value_mask
    if cfg.advantage == "gae":
        adv, returns = gae(rewards, old_values, value_mask, gamma=cfg.gae_gamma, lam=cfg.gae_lambda)
        if cfg.whiten_advantages:
            adv = _global_whiten(adv, value_mask, accelerator)
    elif cfg.advantage == "statement":
        returns = torch.zeros_like(rewards)
        adv = _statement_advantages(samples, reward_cfg, real.shape[1], accelerator)
    else:
        returns = torch.zeros_like(rewards)
        adv = torch.zeros_like(rewards)
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(samples):
            if s.active:
                groups.setdefault(s.group, []).append(i)
        for members in groups.values():
            per_step = [[st.total for st in samples[i].rollout.rewards] if samples[i].rollout.steps
                        else [cfg.empty_response_reward] for i in members]
            normed = group_normalized_step_advantages(per_step, discount=cfg.gae_gamma)
            for i, a in zip(members, normed):
                r = samples[i].rollout
                spread = broadcast_step_values(r, a) if r.steps else torch.full((len(r),), float(a[0]))
                adv[i, : len(r)] = spread
    adv = torch.where(value_mask, adv, torch.zeros_like(adv))
    return PPOBatch(samples=list(samples), old_logprobs=old_logp, old_values=old_values, ref_logprobs=ref_logp,
                    rewards=rewards, score=score, advantages=adv, returns=returns, policy_mask=policy_mask,
                    value_mask=value_mask, kl_coef=float(kl_coef))


# --- the PPO update -----------------------------------------------------------------------------

def ppo_loss(logp_new: torch.Tensor, values_new: torch.Tensor | None, entropy: torch.Tensor | None,
             mb: Mapping[str, torch.Tensor], cfg: RLConfig, kl_coef: float,
             global_policy_tokens: float, global_value_tokens: float, world_size: int = 1,
             global_anchor_tokens: float = 1.0):
    """The loss of one (local) minibatch and its statistics as local SUMS over counted tokens.

    loss = N/P * [sum_policy-tokens (clipped surrogate - ent_coef * entropy [+ kl_coef * k3 KL
    to the reference in 'group' mode])] + vf_coef * N/V * sum_value-tokens (clipped value loss),
    where P, V are the token counts of the GLOBAL minibatch and N the number of processes: with
    DDP's gradient averaging, the gradient is that of token means over the global minibatch.
    Each term is built from `ppo_math.policy_loss` / `value_loss` (local masked means) times the
    local count. Only tokens in mb["policy_mask"] reach the policy term."""
    pmask = mb["policy_mask"]
    vmask = mb["value_mask"]
    n_p = int(pmask.sum())
    n_v = int(vmask.sum())
    zero = logp_new.sum() * 0.0
    stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0,
             "value_clip_fraction": 0.0, "kl_ref": 0.0, "policy_tokens": float(n_p), "value_tokens": float(n_v)}
    loss = zero
    if n_p:
        pl = policy_loss(logp_new, mb["old_logprobs"], mb["advantages"], pmask, cfg.clip_eps)
        term = pl.loss
        stats["policy_loss"] = float(pl.loss.detach()) * n_p
        stats["clip_fraction"] = float(pl.clip_fraction) * n_p
        stats["approx_kl"] = float(pl.approx_kl) * n_p
        if entropy is not None:
            ent = (torch.where(pmask, entropy, torch.zeros_like(entropy))).sum() / n_p
            stats["entropy"] = float(ent.detach()) * n_p
            if cfg.ent_coef:
                term = term - cfg.ent_coef * ent
        # KL to the reference on the sampled tokens (k3, non-negative), always logged; in the loss
        # only in 'group' mode (with GAE it is part of the reward).
        kl = k3_kl_sum(logp_new, mb["ref_logprobs"], pmask) / n_p
        stats["kl_ref"] = float(kl.detach()) * n_p
        if cfg.advantage != "gae" and kl_coef:
            term = term + kl_coef * kl
        loss = loss + term * (n_p * world_size / global_policy_tokens)
    amask = vmask & ~pmask
    n_a = int(amask.sum())
    stats["anchor_tokens"] = float(n_a)
    stats["kl_anchor"] = 0.0
    if cfg.loss_on == "statements" and n_a:
        ka = k3_kl_sum(logp_new, mb["ref_logprobs"], amask) / n_a
        stats["kl_anchor"] = float(ka.detach()) * n_a
        if cfg.anchor_coef:
            loss = loss + cfg.anchor_coef * ka * (n_a * world_size / max(global_anchor_tokens, 1.0))
    if values_new is not None and cfg.advantage == "gae" and n_v:
        vl = value_loss(values_new, mb["old_values"], mb["returns"], vmask, cfg.value_clip)
        stats["value_loss"] = float(vl.loss.detach()) * n_v
        stats["value_clip_fraction"] = float(vl.clip_fraction) * n_v
        loss = loss + cfg.vf_coef * vl.loss * (n_v * world_size / global_value_tokens)
    return loss, stats


def _reduce_sum(values: Sequence[float], accelerator) -> list[float]:
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if accelerator is not None and accelerator.num_processes > 1:
        t = accelerator.reduce(t.to(accelerator.device), reduction="sum").cpu()
    return t.tolist()


class _TooManyNonFinite(Exception):
    pass


def _check_in_a_row(count: int, cfg: RLConfig) -> None:
    if cfg.max_nonfinite_in_a_row is not None and count >= cfg.max_nonfinite_in_a_row:
        raise _TooManyNonFinite(count)


def optimiser_step(loss: torch.Tensor, module, cfg: RLConfig, accelerator, optimizer, scheduler=None) -> str | None:
    """Backward, gradient clipping (`cfg.grad_clip`) and one optimiser (and scheduler) step, unless
    the loss or the gradient norm is not finite: then the gradients are dropped, a warning is
    logged and the fault ("loss" or "gradient norm") is returned, else None. Both checks are
    all-reduced, so every process decides alike."""
    fault = None
    if _reduce_sum([0.0 if torch.isfinite(loss) else 1.0], accelerator)[0]:
        fault = "loss"
    else:
        if accelerator is not None:
            accelerator.backward(loss)
            norm = accelerator.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        else:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        if not bool(torch.isfinite(torch.as_tensor(norm)).all()):  # all-reduced: the same on every process
            fault = "gradient norm"
    if fault is not None:
        log.warning("rl: non-finite %s in a minibatch, step skipped", fault)
        optimizer.zero_grad(set_to_none=True)
        return fault
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return None


def ppo_update(policy_value, vlm, batch: PPOBatch, cfg: RLConfig, accelerator, optimizer,
               scheduler=None, generator: torch.Generator | None = None) -> dict[str, float]:
    """`cfg.ppo_epochs` passes of shuffled minibatches (`cfg.minibatch_size` samples per process)
    over `batch`; one optimiser step per minibatch. Returns the token-weighted means of the loss
    statistics over the whole update (all processes) and `nonfinite_skipped`.

    - `policy_value`: the (accelerate-prepared) `PolicyWithValue`; `vlm`: the `VLM` whose
      `encode` builds the prompts (its model is the unwrapped policy);
    - every process must call it with a batch of the same length (same number of steps).
    The model runs in eval mode (**[choice]**: no dropout, so the ratio is exactly 1 on the first
    minibatch)."""
    n = len(batch)
    world = accelerator.num_processes if accelerator is not None else 1
    generator = generator or torch.Generator().manual_seed(0)
    device = accelerator.device if accelerator is not None else vlm.device
    totals: Counter = Counter()
    skipped = 0
    in_a_row = 0
    steps = 0
    policy_value.eval()
    for _epoch in range(cfg.ppo_epochs):
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, cfg.minibatch_size):
            idx = order[start:start + cfg.minibatch_size]
            chunk = [batch.samples[i] for i in idx]
            tokens = [s.rollout.tokens for s in chunk]
            length = max(len(t) for t in tokens)
            mb = {k: getattr(batch, k)[idx, :length].to(device)
                  for k in ("old_logprobs", "old_values", "ref_logprobs", "advantages", "returns",
                            "policy_mask", "value_mask")}
            g_p, g_v, g_a = _reduce_sum([mb["policy_mask"].sum(), mb["value_mask"].sum(),
                                         (mb["value_mask"] & ~mb["policy_mask"]).sum()], accelerator)
            inputs, n_prompt = response_inputs(vlm, [s.prompt for s in chunk], [s.image for s in chunk], tokens)
            logits, values = policy_value(**inputs)
            logp, vals, ent, _ = response_scores(logits, values, n_prompt, tokens, with_entropy=True,
                                                 temperature=cfg.temperature)
            loss, stats = ppo_loss(logp, vals, ent, mb, cfg, batch.kl_coef, max(g_p, 1.0), max(g_v, 1.0), world,
                                   max(g_a, 1.0))
            if optimiser_step(loss, policy_value, cfg, accelerator, optimizer, scheduler) is not None:
                skipped += 1
                in_a_row += 1
                _check_in_a_row(in_a_row, cfg)
                continue
            in_a_row = 0
            steps += 1
            totals.update(stats)
    keys = sorted(totals)
    reduced = dict(zip(keys, _reduce_sum([totals[k] for k in keys], accelerator)))
    out: dict[str, float] = {}
    p_tok, v_tok = reduced.get("policy_tokens", 0.0), reduced.get("value_tokens", 0.0)
    for k in ("policy_loss", "entropy", "clip_fraction", "approx_kl", "kl_ref"):
        out[k] = reduced.get(k, 0.0) / p_tok if p_tok else float("nan")
    a_tok = reduced.get("anchor_tokens", 0.0)
    out["kl_anchor"] = reduced.get("kl_anchor", 0.0) / a_tok if a_tok else float("nan")
    for k in ("value_loss", "value_clip_fraction"):
        out[k] = reduced.get(k, 0.0) / v_tok if v_tok and cfg.advantage == "gae" else float("nan")
    out["optimizer_steps"] = float(steps)
    out["nonfinite_skipped"] = float(_reduce_sum([skipped], accelerator)[0] / world)
    return out


# --- statistics ---------------------------------------------------------------------------------

def rollout_stats(batch: PPOBatch, accelerator=None) -> dict[str, float]:
    """Reward components, KL, parse rate, level histograms and accuracies over the samples of
    every process (identical on each)."""
    local = {"r_ka": [], "r_ec": [], "r_cs": [], "total": [], "seq_reward": [], "seq_kl": [],
             "expressed": [], "internal": [], "answer": [], "step_correct": [], "tokens": [],
             "inactive": 0, "empty": 0, "dropped_steps": 0, "steps": 0}
    for i, s in enumerate(batch.samples):
        r = s.rollout
        local["tokens"].append(len(r))
        local["dropped_steps"] += s.dropped_steps
        if not s.active:
            local["inactive"] += 1
            continue
        if not r.steps:
            local["empty"] += 1
        for st, rw in zip(r.steps, r.rewards or ()):
            local["r_ka"].append(rw.r_ka)
            local["r_ec"].append(rw.r_ec)
            local["r_cs"].append(rw.r_cs)
            local["total"].append(rw.total)
            local["expressed"].append(st.expressed_level)
            local["internal"].append(st.internal_level)
            local["step_correct"].append(st.correct)
        local["steps"] += len(r.steps)
        local["seq_reward"].append(float(batch.score[i].sum()))
        local["seq_kl"].append(float((r.logprobs - r.ref_logprobs).sum()))
        local["answer"].append(s.answer_correct)
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object([local])
    else:
        parts = [local]
    merged: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            merged[k] = merged.get(k, [] if isinstance(v, list) else 0) + v

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    out = {f"reward/{k}": mean(merged[k]) for k in ("r_ka", "r_ec", "r_cs", "total")}
    out["reward/per_response"] = mean(merged["seq_reward"])
    out["kl/per_response"] = mean(merged["seq_kl"])
    n_steps = len(merged["expressed"])
    parsed = [v for v in merged["expressed"] if v is not None]
    out["parse_rate"] = len(parsed) / n_steps if n_steps else float("nan")
    for level in range(1, N_LEVELS + 1):
        out[f"levels/expressed_{level}"] = sum(v == level for v in parsed) / n_steps if n_steps else float("nan")
        out[f"levels/internal_{level}"] = (sum(v == level for v in merged["internal"]) / n_steps
                                           if n_steps else float("nan"))
    out["levels/expressed_unparsed"] = (n_steps - len(parsed)) / n_steps if n_steps else float("nan")
    out["accuracy/answer"] = mean(merged["answer"])
    out["accuracy/step"] = mean(merged["step_correct"])
    out["responses"] = float(sum(1 for p in parts for _ in p["tokens"]))
    out["response_tokens"] = mean(merged["tokens"])
    out["steps_per_response"] = merged["steps"] / max(1, len(merged["answer"]))
    out["inactive_responses"] = float(merged["inactive"])
    out["empty_responses"] = float(merged["empty"])
    out["dropped_steps"] = float(merged["dropped_steps"])
    return out


# --- checkpoints --------------------------------------------------------------------------------

def latest_rl_checkpoint(directory: Path) -> Path | None:
    """The newest whole checkpoint `iter-N` under `directory` (None if there is none)."""
    from mmboundary.training.loop import latest_checkpoint

    return latest_checkpoint(directory, prefix="iter")


def _trainable(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def save_rl_checkpoint(directory: Path, iteration: int, pv: PolicyWithValue, optimizer, scheduler, kl,
                       history: list[dict], nonfinite: int) -> Path:
    """Write `iter-<iteration>` atomically (temporary folder, then rename); remove older ones."""
    from safetensors.torch import save_file

    from mmboundary.training.loop import write_checkpoint

    def fill(tmp: Path) -> None:
        save_file(_trainable(pv.model), str(tmp / "trainable.safetensors"))
        pv.value_head.save(tmp / "value_head.safetensors")
        torch.save({"iteration": iteration, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "kl": kl.state_dict(),
                    "history": json.dumps(history), "nonfinite": int(nonfinite)}, tmp / "trainer_state.pt")

    return write_checkpoint(directory, "iter", iteration, fill)


def load_rl_checkpoint(path: Path, pv: PolicyWithValue, optimizer, scheduler, kl) -> dict[str, Any]:
    """Restore a checkpoint of `save_rl_checkpoint`; returns iteration, history, nonfinite."""
    from safetensors.torch import load_file

    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(pv.model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    unexpected = [n for n in weights if n not in params]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w.to(params[n].device, params[n].dtype))
        head = load_file(str(path / "value_head.safetensors"))
        for n, p in pv.value_head.named_parameters():
            p.copy_(head[n].to(p.device, p.dtype))
    st = torch.load(path / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(st["optimizer"])
    scheduler.load_state_dict(st["scheduler"])
    kl.load_state_dict(st["kl"])
    return {"iteration": int(st["iteration"]), "history": json.loads(st["history"]),
            "nonfinite": int(st["nonfinite"])}


# --- the loop -----------------------------------------------------------------------------------

def _json_safe(metrics: dict) -> dict:
    """NaN/inf (e.g. the value loss in a critic-free mode) as null: metrics.jsonl stays strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def make_rl_accelerator(device: str = "auto"):
    """An `Accelerator` for the stage: CPU when asked or when there is no GPU; DDP told that some
    parameters get no gradient (e.g. the vision tower's unused post-layernorm, the value head in
    'group' mode)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def question_indices(n_examples: int, iteration: int, batch_size: int, seed: int) -> list[int]:
    """The questions of an iteration: positions [it*B, (it+1)*B) of an endless sequence of
    permutations of the examples, permutation e seeded by (seed, e)."""
    out, perms = [], {}
    for position in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, k = divmod(position, n_examples)
        if epoch not in perms:
            g = torch.Generator().manual_seed(_seed_for(seed, epoch, 99))
            perms[epoch] = torch.randperm(n_examples, generator=g).tolist()
        out.append(perms[epoch][k])
    return out


def _make_optimizer(pv: PolicyWithValue, cfg: RLConfig):
    from mmboundary.training.loop import adamw_param_groups

    opt = torch.optim.AdamW(adamw_param_groups(pv, cfg.weight_decay), lr=cfg.lr)
    warm = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return opt, sched


def _writer(out_dir: Path | None):
    if out_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: metrics.jsonl only
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def train_rl(policy, reference, examples: Sequence[Any], ctx: RolloutContext, cfg: RLConfig, *, seed: int,
             accelerator, out_dir: Path | None = None,
             callback: Callable[[int, dict], None] | None = None) -> tuple[dict, PolicyWithValue]:
    """PPO on `policy` (a `VLM`, trained in place) against the frozen `reference` (a `VLM`; None
    with `finetune='lora'`, where the reference is the policy with its adapters disabled).

    `out_dir`: where `metrics.jsonl`, `tensorboard/` and `checkpoints/` go (None: nothing is
    written, no checkpoint). `callback(iteration, metrics)` runs after each iteration (and its
    checkpoint). Returns the summary and the `PolicyWithValue` (unwrapped)."""
    if not examples:
        raise ValueError("rl: no training questions")
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.rollout_batch_size % world:
        raise ValueError(f"rl: rollout_batch_size {cfg.rollout_batch_size} is not divisible by the "
                         f"{world} processes")
    per_rank = cfg.rollout_batch_size // world
    from mmboundary.training.rl_levels import level_update, prepare_level_batch  # it imports this module
    if cfg.algorithm == "expected" and world > 1:
        raise ValueError("rl.algorithm 'expected' runs on one process (its multi-process update is not written "
                         f"yet), not {world}; use algorithm 'ppo' with several processes")
    if cfg.algorithm == "expected" and ctx.granularity != "step":
        raise ValueError("rl.algorithm 'expected' writes every level's statement after each step; it needs "
                         "statements.granularity 'step', not 'answer' (use algorithm 'ppo')")
    if cfg.finetune == "lora":
        from mmboundary.training.sft import _lora_wrap

        policy.model = _lora_wrap(policy.model, cfg)
    elif reference is None:
        raise ValueError("rl: full fine-tuning needs a reference model")
    device = accelerator.device
    policy.model.to(device)
    if reference is not None:
        reference.model.to(device)
        reference.model.eval()
        reference.model.requires_grad_(False)
    head = ValueHead(hidden_size_of(policy.model), cfg.value_head_init_std, seed=seed).to(device)
    pv = PolicyWithValue(policy.model, head, detach_value_input=not cfg.value_grad_to_policy)
    opt, sched = _make_optimizer(pv, cfg)
    pv_ddp, opt = accelerator.prepare(pv, opt)
    kl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.kl_adaptive
          else FixedKLController(cfg.kl_coef))
    ckpt_dir = out_dir / "checkpoints" if out_dir is not None else None
    start, history, nonfinite, resumed_from = 0, [], 0, None
    if ckpt_dir is not None:
        latest = latest_rl_checkpoint(ckpt_dir)
        if latest is not None:
            st = load_rl_checkpoint(latest, pv, opt, sched, kl)
            start, history, nonfinite = st["iteration"], st["history"], st["nonfinite"]
            resumed_from = latest.name
            log.info("rl: resumed from %s", latest)
    main = accelerator.is_main_process
    writer = _writer(out_dir) if main else None
    metrics_path = out_dir / "metrics.jsonl" if out_dir is not None else None
    if main and metrics_path is not None:
        from mmboundary.io import atomic_write_text

        atomic_write_text(metrics_path, "".join(json.dumps(_json_safe(h)) + "\n" for h in history))
        if writer is not None:
            for h in history:
                for k, v in h.items():
                    if isinstance(v, (int, float)) and k != "iteration":
                        writer.add_scalar(k, v, h["iteration"])
    started = time.time()
    for it in range(start, cfg.iterations):
        t0 = time.time()
        chosen = question_indices(len(examples), it, cfg.rollout_batch_size, seed)
        mine = [examples[i] for i in chosen[rank * per_rank:(rank + 1) * per_rank]]
        torch.manual_seed(_seed_for(seed, it, rank))
        samples = collect_samples(policy, mine, ctx, cfg)
        t_sample = time.time() - t0
        expected = cfg.algorithm == "expected"
        samples = score_samples(pv, policy, reference.model if reference is not None else None, samples,
                                cfg.forward_batch_size, reference_is_adapter_off=reference is None,
                                temperature=1.0 if expected else cfg.temperature)
        batch = prepare_batch(samples, cfg, kl.value, accelerator)
        stats = rollout_stats(batch, accelerator)
        if expected:
            level_chains = prepare_level_batch(batch.samples, policy, reference.model if reference is not None
                                               else None, ctx, cfg, reference_is_adapter_off=reference is None)
        gen = torch.Generator().manual_seed(_seed_for(seed, it, rank) + 1)
        t1 = time.time()
        try:
            if expected:
                upd = level_update(pv_ddp, policy, batch, level_chains, cfg, accelerator, opt, sched, gen)
            else:
                upd = ppo_update(pv_ddp, policy, batch, cfg, accelerator, opt, sched, gen)
        except _TooManyNonFinite as e:
            from mmboundary.errors import NonFiniteError

            latest = latest_rl_checkpoint(ckpt_dir) if ckpt_dir is not None else None
            raise NonFiniteError(
                f"rl: {e.args[0]} optimiser steps in a row had a non-finite loss or gradient at iteration "
                f"{it + 1}; stopped. Newest checkpoint (left as it was): {latest or 'none'}") from None
        nonfinite += int(upd.pop("nonfinite_skipped"))
        metrics = {"iteration": it + 1, **stats, **{f"loss/{k}" if k in ("policy_loss", "value_loss") else k: v
                                                     for k, v in upd.items()},
                   "kl_coef": kl.value, "nonfinite_skipped_total": nonfinite, "lr": sched.get_last_lr()[0],
                   "seconds/sample": t_sample, "seconds/update": time.time() - t1,
                   "seconds/iteration": time.time() - t0}
        observed = stats["kl/per_response"]
        if math.isfinite(observed):
            kl.update(observed, int(stats["responses"]))
        history.append(metrics)
        if expected:
            log.info("rl iteration %d/%d: greedy reward %.3f (KA %.3f EC %.3f CS %.3f) expected %.3f level KL %.4f "
                     "anchor %.4f modes %s parse %.2f (%.1fs)", it + 1, cfg.iterations, stats["reward/total"],
                     stats["reward/r_ka"], stats["reward/r_ec"], stats["reward/r_cs"], upd["expected_reward"],
                     upd["level_kl"], upd["kl_anchor"],
                     "/".join(f"{upd[f'levels/mode_{lv}']:.2f}" for lv in range(1, N_LEVELS + 1)),
                     stats["parse_rate"], metrics["seconds/iteration"])
        else:
            log.info("rl iteration %d/%d: reward %.3f (KA %.3f EC %.3f CS %.3f) KL %.3f parse %.2f "
                     "policy %.4f value %.4f clip %.3f (%.1fs)", it + 1, cfg.iterations, stats["reward/total"],
                     stats["reward/r_ka"], stats["reward/r_ec"], stats["reward/r_cs"], observed,
                     stats["parse_rate"], upd["policy_loss"], upd["value_loss"], upd["clip_fraction"],
                     metrics["seconds/iteration"])
        if main and metrics_path is not None:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(_json_safe(metrics)) + "\n")
            if writer is not None:
                for k, v in metrics.items():
                    if isinstance(v, (int, float)) and k != "iteration":
                        writer.add_scalar(k, v, it + 1)
                writer.flush()
        if ckpt_dir is not None and (it + 1) % cfg.save_every == 0 and it + 1 < cfg.iterations:
            if main:
                save_rl_checkpoint(ckpt_dir, it + 1, pv, opt, sched, kl, history, nonfinite)
            accelerator.wait_for_everyone()
        if callback is not None:
            callback(it + 1, metrics)
    if writer is not None:
        writer.close()
    pv.eval()
    ran = cfg.iterations - start
    summary = {"iterations": cfg.iterations, "seconds": round(time.time() - started, 2),
               "seconds_per_iteration": round((time.time() - started) / ran, 2) if ran else None,
               "nonfinite_skipped": nonfinite, "kl_coef": kl.value, "processes": world,
               "final": history[-1] if history else None}
    if resumed_from is not None:
        summary["resumed_from"] = resumed_from
    return summary, pv


# --- the stage ----------------------------------------------------------------------------------

def rl_questions(run, rl: RLConfig, accelerator=None) -> list:
    """The questions of the stage (`RLConfig.questions`): the train split, or fresh benchmark
    questions drawn by the main process into `<run>/rl/questions/` and read by every process."""
    from mmboundary.pipeline import load_split

    if rl.questions == "train":
        return load_split(run, "train", rl.train_examples)
    data = run.config.data
    if data.source != "benchmark":
        from mmboundary.errors import ConfigError

        raise ConfigError("rl.questions: 'fresh' draws new questions of the built-in benchmark; with "
                          f"data.source {data.source!r} use 'train' (or point data.train at unseen questions)")
    from mmboundary.data.benchmark.generate import generate_examples
    from mmboundary.data.jsonl import read_examples, write_examples

    n = rl.train_examples or rl.iterations * rl.rollout_batch_size
    spec = data.benchmark.model_copy(update={"seed": 10_000 + data.benchmark.seed, "n_train": n})
    folder = run.stage_dir("rl") / "questions"
    path = folder / "questions.jsonl"
    main = accelerator is None or accelerator.is_main_process
    if main:
        examples = [ex.model_copy(update={"id": f"fresh-{ex.id}"})
                    for ex in generate_examples(spec, "train", folder / "images")]
        write_examples(examples, path)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return read_examples(path, check_images=False)


def run_rl_stage(run) -> dict:
    """Stage `rl`: PPO from `<run>/sft/model` (the vanilla model with `rl.init='vanilla'`); writes
    `<run>/rl/model` (a plain Hugging Face checkpoint, LoRA merged), `<run>/rl/value_head.safetensors`, `<run>/rl/metrics.jsonl`,
    `<run>/rl/tensorboard/`; `<run>/rl/checkpoints/` while training (resumed, removed at the end).
    The config section is `run.config.rl` (the defaults of `RLConfig` while the run config has
    none)."""
    from mmboundary.models import load_vlm

    cfg = run.config
    rl = getattr(cfg, "rl", None) or RLConfig()
    if rl.init == "sft":
        start_model = run.require("sft") / "model"
    else:
        from mmboundary.pipeline import resolve_vlm_path

        start_model = resolve_vlm_path(run)
    accelerator = make_rl_accelerator(cfg.device)
    out = run.stage_dir("rl")
    if accelerator.is_main_process:
        run.begin_stage("rl", keep=("checkpoints",))
    accelerator.wait_for_everyone()
    ctx = RolloutContext.from_run(run)
    policy = load_vlm(start_model, cfg.model)
    if cfg.model.gradient_checkpointing:  # activations recomputed in the PPO updates
        from mmboundary.models.factory import enable_gradient_checkpointing

        enable_gradient_checkpointing(policy.model, in_eval_mode=True)  # PPO updates run in eval mode
    reference = None if rl.finetune == "lora" else load_vlm(start_model, cfg.model)
    examples = rl_questions(run, rl, accelerator)
    seed = rl.seed if rl.seed is not None else cfg.seed
    summary, pv = train_rl(policy, reference, examples, ctx, rl, seed=seed, accelerator=accelerator, out_dir=out)
    if accelerator.is_main_process:
        model = pv.model
        if rl.finetune == "lora":
            model.save_pretrained(out / "adapter")
            model = model.merge_and_unload()
        policy.model = model
        policy.save(out / "model")
        pv.value_head.save(out / "value_head.safetensors")
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    accelerator.wait_for_everyone()
    summary["train_questions"] = len(examples)
    summary["questions"] = rl.questions
    summary["finetune"] = rl.finetune
    summary["algorithm"] = rl.algorithm
    summary["advantage"] = rl.advantage
    summary["loss_on"] = rl.loss_on
    return summary
