"""Statistics and logs of the RL stage.

    RolloutStats / rollout_stats    reward components, KL, parse rate, level histograms and
                                    accuracies of an iteration's rollouts, over every process
    MetricsLog                      `metrics.jsonl` (strict JSON: NaN/inf as null) and, when it is
                                    installed, TensorBoard; main process only
    log_iteration                   the one log line per iteration
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate.utils import gather_object

from mmboundary.io import atomic_write_text
from mmboundary.training.ppo import PPOBatch
from mmboundary.training.rollout import N_LEVELS

log = logging.getLogger("mmboundary.rl")

__all__ = ["MetricsLog", "RolloutStats", "json_safe", "log_iteration", "rollout_stats"]


@dataclass(frozen=True)
class RolloutStats:
    """An iteration's rollout statistics over the samples of every process (identical on each).

    Means over steps of active samples: the reward components and total (`reward_*`), the level
    histograms of the expressed (`levels_expressed[l-1]`, unparsed apart) and internal
    confidence, step accuracy; over active responses: the score and the k1 KL to the reference
    summed per response, answer accuracy. NaN where there is nothing to average."""

    reward_r_ka: float
    reward_r_ec: float
    reward_r_cs: float
    reward_total: float
    reward_per_response: float
    kl_per_response: float
    parse_rate: float
    levels_expressed: tuple[float, ...]
    levels_internal: tuple[float, ...]
    levels_expressed_unparsed: float
    accuracy_answer: float
    accuracy_step: float
    responses: float
    response_tokens: float
    steps_per_response: float
    inactive_responses: float
    empty_responses: float
    dropped_steps: float

    def metrics(self) -> dict[str, float]:
        """The statistics under their `metrics.jsonl` keys, in that file's order."""
        out = {"reward/r_ka": self.reward_r_ka, "reward/r_ec": self.reward_r_ec, "reward/r_cs": self.reward_r_cs,
               "reward/total": self.reward_total, "reward/per_response": self.reward_per_response,
               "kl/per_response": self.kl_per_response, "parse_rate": self.parse_rate}
        for level in range(1, N_LEVELS + 1):
            out[f"levels/expressed_{level}"] = self.levels_expressed[level - 1]
            out[f"levels/internal_{level}"] = self.levels_internal[level - 1]
        out.update({"levels/expressed_unparsed": self.levels_expressed_unparsed,
                    "accuracy/answer": self.accuracy_answer, "accuracy/step": self.accuracy_step,
                    "responses": self.responses, "response_tokens": self.response_tokens,
                    "steps_per_response": self.steps_per_response, "inactive_responses": self.inactive_responses,
                    "empty_responses": self.empty_responses, "dropped_steps": self.dropped_steps})
        return out


def _mean(xs) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def rollout_stats(batch: PPOBatch, accelerator=None) -> RolloutStats:
    """The `RolloutStats` of a batch's samples (gathered over every process)."""
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
    parts = gather_object([local]) if accelerator is not None and accelerator.num_processes > 1 else [local]
    merged: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            merged[k] = merged.get(k, [] if isinstance(v, list) else 0) + v
    n_steps = len(merged["expressed"])
    parsed = [v for v in merged["expressed"] if v is not None]
    nan = float("nan")
    return RolloutStats(
        reward_r_ka=_mean(merged["r_ka"]), reward_r_ec=_mean(merged["r_ec"]), reward_r_cs=_mean(merged["r_cs"]),
        reward_total=_mean(merged["total"]), reward_per_response=_mean(merged["seq_reward"]),
        kl_per_response=_mean(merged["seq_kl"]),
        parse_rate=len(parsed) / n_steps if n_steps else nan,
        levels_expressed=tuple(sum(v == level for v in parsed) / n_steps if n_steps else nan
                               for level in range(1, N_LEVELS + 1)),
        levels_internal=tuple(sum(v == level for v in merged["internal"]) / n_steps if n_steps else nan
                              for level in range(1, N_LEVELS + 1)),
        levels_expressed_unparsed=(n_steps - len(parsed)) / n_steps if n_steps else nan,
        accuracy_answer=_mean(merged["answer"]), accuracy_step=_mean(merged["step_correct"]),
        responses=float(sum(1 for p in parts for _ in p["tokens"])), response_tokens=_mean(merged["tokens"]),
        steps_per_response=merged["steps"] / max(1, len(merged["answer"])),
        inactive_responses=float(merged["inactive"]), empty_responses=float(merged["empty"]),
        dropped_steps=float(merged["dropped_steps"]))


def json_safe(metrics: dict) -> dict:
    """NaN/inf (e.g. the value loss in a critic-free mode) as null: metrics.jsonl stays strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def _tensorboard(out_dir: Path):
    try:  # optional: without tensorboard, metrics.jsonl only
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


class MetricsLog:
    """`<out_dir>/metrics.jsonl` and `<out_dir>/tensorboard/`, written by the main process only
    (`out_dir` None: nothing is written). Opening it rewrites `metrics.jsonl` with `history`, the
    iterations a resumed run already has (dropping lines written after its checkpoint), and
    replays them into TensorBoard."""

    def __init__(self, out_dir: Path | None, history: list[dict], main: bool):
        self.path = out_dir / "metrics.jsonl" if out_dir is not None and main else None
        self.writer = _tensorboard(out_dir) if out_dir is not None and main else None
        if self.path is not None:
            atomic_write_text(self.path, "".join(json.dumps(json_safe(h)) + "\n" for h in history))
            for h in history:
                self._scalars(h, h["iteration"])

    def _scalars(self, metrics: dict, step: int) -> None:
        if self.writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and k != "iteration":
                    self.writer.add_scalar(k, v, step)

    def append(self, metrics: dict) -> None:
        """One iteration's line (and its scalars)."""
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(json_safe(metrics)) + "\n")
        self._scalars(metrics, metrics["iteration"])
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def log_iteration(iteration: int, iterations: int, expected: bool, stats: RolloutStats, upd: dict[str, float],
                  seconds: float) -> None:
    """The iteration's log line (`tests/_kill_worker.py` reads 'rl iteration N/M:')."""
    if expected:
        log.info("rl iteration %d/%d: greedy reward %.3f (KA %.3f EC %.3f CS %.3f) expected %.3f level KL %.4f "
                 "anchor %.4f modes %s parse %.2f (%.1fs)", iteration, iterations, stats.reward_total,
                 stats.reward_r_ka, stats.reward_r_ec, stats.reward_r_cs, upd["expected_reward"],
                 upd["level_kl"], upd["kl_anchor"],
                 "/".join(f"{upd[f'levels/mode_{lv}']:.2f}" for lv in range(1, N_LEVELS + 1)),
                 stats.parse_rate, seconds)
    else:
        log.info("rl iteration %d/%d: reward %.3f (KA %.3f EC %.3f CS %.3f) KL %.3f parse %.2f "
                 "policy %.4f value %.4f clip %.3f (%.1fs)", iteration, iterations, stats.reward_total,
                 stats.reward_r_ka, stats.reward_r_ec, stats.reward_r_cs, stats.kl_per_response,
                 stats.parse_rate, upd["policy_loss"], upd["value_loss"], upd["clip_fraction"], seconds)
