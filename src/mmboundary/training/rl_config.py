"""The `rl` config section (`RLConfig`): stage `rl`, PPO from the SFT model with per-step rewards
(method.md section 5), or the expected-level objective (`algorithm: expected`).

A light module: pydantic and the reward section (`training.rewards.RewardConfig`) only, so the
config tree (`mmboundary.config`) loads without any trainer.

Fields are grouped by what they control, as in TRL's `GRPOConfig`, each with a one-line help;
the rationale and measurements behind every **[choice]** are in docs/defaults.md (section
"rl"). The field ORDER is the YAML order of the `rl` section of every saved config, which
compare fingerprints hash: it never changes, new fields go at the end, and so a group below
may appear twice.

Batch sizes: `rollout_batch_size` questions per iteration over ALL processes (each takes an
equal share), `samples_per_question` responses each; `minibatch_size` responses per optimiser
step PER PROCESS.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mmboundary.schema import Section
from mmboundary.training.reward_config import RewardConfig

__all__ = ["RLConfig"]


class RLConfig(Section):
    """Stage `rl`: PPO from the SFT model with per-step rewards (method.md section 5).

    Batch sizes: `rollout_batch_size` questions per iteration over ALL processes (each takes an
    equal share), `samples_per_question` responses each; `minibatch_size` responses per
    optimiser step PER PROCESS."""

    # --- rollouts -------------------------------------------------------------------------------
    rollout_batch_size: int = Field(
        16, gt=0, description="Questions per iteration, over all processes (divisible by the number of "
        "processes). **[choice]** 16, the paper's batch.")
    samples_per_question: int = Field(3, gt=0, description="Sampled responses per question (paper: 3).")
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature of the rollouts; log-probs, ratios and KL are those of "
        "the same tempered policy. **[choice]** 1.0.")
    sampling: Literal["all", "statements"] = Field(
        "statements", description="What the rollouts sample: 'all' tokens (plain PPO) or only the 'statements', "
        "the reasoning decoded greedily as at evaluation (`training.sampling`; needs `loss_on='statements'`). "
        "**[choice]** 'statements'.")
    max_new_tokens: int = Field(
        224, gt=0, description="Longest sampled response. **[choice]** 224, as `generation.max_new_tokens`.")

    # --- optimisation ---------------------------------------------------------------------------
    iterations: int = Field(
        40, gt=0, description="Iterations (rollout batch + update). **[choice]** 40 on the tiny default.")
    ppo_epochs: int = Field(2, gt=0, description="Passes over each rollout batch. **[choice]** 2.")
    minibatch_size: int = Field(8, gt=0, description="Responses per optimiser step, per process. **[choice]** 8.")
    forward_batch_size: int = Field(
        16, gt=0, description="Responses per no-grad pass (sampling, old/reference log-probs, signals).")
    lr: float = Field(
        3e-5, ge=0, description="AdamW learning rate, constant after warm-up. **[choice]** 3e-5 on the tiny "
        "default (the paper: 1e-5 for 7B models with LoRA).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay. **[choice]** 0.")
    warmup_steps: int = Field(0, ge=0, description="Optimiser steps of linear learning-rate warm-up, then constant.")

    # --- PPO and advantages ---------------------------------------------------------------------
    clip_eps: float = Field(0.2, gt=0, description="PPO ratio clipping epsilon (Schulman et al. 2017: 0.2).")
    value_clip: float | None = Field(
        0.2, gt=0, description="Value clipping range around the old values, in reward units (None: off). "
        "**[choice]** 0.2.")
    vf_coef: float = Field(0.5, ge=0, description="Weight of the value loss. **[choice]** 0.5.")
    ent_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus (0: off; entropy is still logged).")
    gae_gamma: float = Field(
        1.0, ge=0, le=1, description="Discount over tokens (and over steps for 'group'). **[choice]** 1.")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE lambda. **[choice]** 0.95.")
    whiten_advantages: bool = Field(
        True, description="Whiten GAE advantages over the batch of all processes (the critic-free "
        "estimators are never whitened).")

    # --- KL to the SFT model --------------------------------------------------------------------
    kl_coef: float = Field(
        0.05, ge=0, description="(Initial) KL coefficient; three meanings: with advantage 'gae' the per-token KL "
        "penalty in the reward, with 'group'/'statement' a k3 KL term added to the loss, with algorithm "
        "'expected' the weight of KL between level distributions. **[choice]** 0.05.")
    kl_adaptive: bool = Field(
        False, description="Adapt the KL coefficient towards `kl_target` (Ziegler et al. 2019) instead of "
        "keeping it fixed.")
    kl_target: float = Field(6.0, gt=0, description="Target KL per response (nats) of the adaptive controller.")
    kl_horizon: float = Field(10000.0, gt=0, description="Horizon (responses) of the adaptive controller.")

    # --- rewards --------------------------------------------------------------------------------
    reward: RewardConfig = Field(default_factory=RewardConfig)
    empty_response_reward: float = Field(
        -3.0, description="Reward of a response with no step, on its last token. **[choice]** -3 "
        "(-alpha - beta - gamma).")
    unknown_step_target: Literal["answer", "wrong"] = Field(
        "answer", description="y_t of a step whose truth cannot be decided: the answer correctness ('answer') "
        "or 0 ('wrong'). **[choice]** 'answer'.")

    # --- algorithm and the expected-level objective ---------------------------------------------
    algorithm: Literal["ppo", "expected"] = Field(
        "ppo", description="'ppo': PPO on sampled statements (the paper); 'expected': the exact expected "
        "per-step reward over the five levels on the greedy chains (`training/level_objective.py`).")
    level_phrasings: int = Field(
        1, gt=0, description="'expected': statements per level whose probabilities make the level's (the "
        "first N of each level's pool). **[choice]** 1, as `sft_data.statements_per_level`.")
    level_gradient: Literal["exact", "natural", "floored"] = Field(
        "exact", description="'expected': the gradient over level logits: 'exact', 'natural' or 'floored' "
        "(`level_objective.expected_level_loss`). **[choice]** 'exact'.")
    level_floor: float = Field(
        0.05, ge=0, le=1, description="'floored': the least weight of a better-than-expected level. "
        "**[choice]** 0.05.")
    level_temperature: float = Field(
        1.0, gt=0, description="'expected' with the exact gradient: the expectation is taken under "
        "softmax(level log-probs / tau). **[choice]** 1.")

    # --- PPO and advantages (continued) ---------------------------------------------------------
    advantage: Literal["gae", "group", "statement"] = Field(
        "gae", description="The advantage estimator (`training.estimators`): 'gae' (value head, the paper), "
        "critic-free 'group' or 'statement' (the latter needs `loss_on='statements'`).")
    anchor_coef: float = Field(
        1.0, ge=0, description="With `loss_on='statements'`: weight of a k3 KL(policy || SFT) term on every "
        "generated token outside the statements (0: off). **[choice]** 1.0.")
    loss_on: Literal["all", "statements"] = Field(
        "statements", description="Tokens of the policy loss: every generated token or only the statement "
        "tokens (the value loss always uses every token). **[choice]** 'statements'.")
    value_grad_to_policy: bool = Field(
        False, description="Whether the value loss also trains the shared trunk (True) or only the value "
        "head. **[choice]** False.")
    value_head_init_std: float = Field(1e-3, ge=0, description="Std of the value head's initial weights.")

    # --- LoRA -----------------------------------------------------------------------------------
    finetune: Literal["full", "lora"] = Field(
        "full", description="'full': every weight; 'lora': PEFT LoRA adapters (as in `sft`), merged when "
        "saved; the reference is then the model with the adapters disabled.")
    lora_r: int = Field(16, gt=0, description="LoRA rank.")
    lora_alpha: int = Field(32, gt=0, description="LoRA alpha (scale alpha / r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout. **[choice]** 0.")
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get LoRA adapters (language model only).")

    # --- stability and checkpoints --------------------------------------------------------------
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clipping.")
    max_nonfinite_in_a_row: int | None = Field(
        3, gt=0, description="Stop (errors.NonFiniteError, the last checkpoint kept) after this many optimiser "
        "steps in a row skipped for a non-finite loss or gradient norm (None: never stop).")
    save_every: int = Field(10, gt=0, description="Iterations between resumable checkpoints.")

    # --- data -----------------------------------------------------------------------------------
    init: Literal["sft", "vanilla"] = Field(
        "sft", description="The model RL starts from and is kept near: the SFT model (the method) or the "
        "vanilla one ('vanilla': the paper's DRL baseline).")
    train_examples: int | None = Field(None, gt=0, description="Use only the first N questions (None: all).")
    questions: Literal["train", "fresh"] = Field(
        "train", description="The questions rolled out on: the 'train' split, or 'fresh' built-in benchmark "
        "questions drawn for this stage (`rl/questions/`). **[choice]** 'train'.")
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
