"""Stage `rl`: calibrate the stated confidence with RL from the SFT model (method.md section 5;
the trainer: `training.rl.train_rl`).

Reads `<run>/sft/model` (the vanilla model with `rl.init: vanilla`), the estimate stage's fitted
confidence model (`artifacts.scoring_context`) and the questions (`rl_questions`); writes
`<run>/rl/model` (a plain Hugging Face checkpoint, LoRA merged), `<run>/rl/value_head.safetensors`,
`<run>/rl/metrics.jsonl`, `<run>/rl/tensorboard/`, and `<run>/rl/checkpoints/` while training
(resumed, removed at the end).
"""

from __future__ import annotations

import shutil

from mmboundary.artifacts import load_split, resolve_vlm_path, scoring_context
from mmboundary.data.benchmark.generate import generate_examples
from mmboundary.data.jsonl import read_examples, write_examples
from mmboundary.distributed import make_accelerator
from mmboundary.errors import ConfigError
from mmboundary.models.factory import enable_gradient_checkpointing, load_vlm
from mmboundary.runs import Run
from mmboundary.stages.common import begin_stage_once
from mmboundary.training.rl import train_rl
from mmboundary.training.rl_config import RLConfig

__all__ = ["rl_questions", "stage_rl"]


def rl_questions(run: Run, rl: RLConfig, accelerator=None) -> list:
    """The questions of the stage (`RLConfig.questions`): the train split, or fresh benchmark
    questions drawn by the main process into `<run>/rl/questions/` and read by every process."""
    if rl.questions == "train":
        return load_split(run, "train", rl.train_examples)
    data = run.config.data
    if data.source != "benchmark":
        raise ConfigError("rl.questions: 'fresh' draws new questions of the built-in benchmark; with "
                          f"data.source {data.source!r} use 'train' (or point data.train at unseen questions)")
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


def stage_rl(run: Run) -> dict:
    """Stage `rl` (see the module docstring); returns the trainer's summary and the settings that
    name the run's RL variant. The config section is `run.config.rl`."""
    cfg = run.config
    rl = cfg.rl
    start_model = run.require("sft") / "model" if rl.init == "sft" else resolve_vlm_path(run)
    accelerator = make_accelerator(cfg.device)
    out = begin_stage_once(run, "rl", keep=("checkpoints",))
    ctx = scoring_context(run)
    policy = load_vlm(start_model, cfg.model)
    if cfg.model.gradient_checkpointing:  # activations recomputed in the updates, which run in eval mode
        enable_gradient_checkpointing(policy.model, in_eval_mode=True)
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
    summary.update(train_questions=len(examples), questions=rl.questions, finetune=rl.finetune,
                   algorithm=rl.algorithm, advantage=rl.advantage, loss_on=rl.loss_on)
    return summary
