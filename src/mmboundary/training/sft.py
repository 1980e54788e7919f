"""The SFT warm-up (method.md section 4): the model learns to write a confidence statement after
each of its own reasoning steps.

    sft_records  (pure)  vanilla chain + internal level per step -> response with statements
    train_sft            fine-tune on those responses, loss on response tokens only

`sft_records` is step 3 of the method: each step of the vanilla model's own chain (step 1) gets
the statement of its internal level (step 2, the `estimate` stage), drawn at random, seeded,
from that level's pool (`statements.mapping`). `train_sft` is step 4: the thin supervised loop
of `training.loop` (AdamW, warm-up + cosine, gradient clipping, resumable checkpoints) over
(image, prompt, response) items; `VLM.encode` puts -100 on prompt and padding, so the loss is on
response tokens only. Full fine-tuning or LoRA (PEFT) by config; a LoRA model is merged into
its weights before it is saved, so every later stage loads a plain Hugging Face checkpoint (the
adapter is saved beside it).

Departure from the paper: it fine-tunes 7B models with LoRA at lr 1e-4; the tiny default model
is fine-tuned in full at lr 3e-4 for 3 epochs (`sft.train`).

Under several processes (`accelerate launch`, DDP or DeepSpeed ZeRO-2): `sft.train.batch_size`
is the GLOBAL batch; each process takes its slice, the loss weighted by response tokens
(`training.loop`), so N processes give one process's weights up to the all-reduce's summation
order. Only the main process writes checkpoints and the final model; under ZeRO-3 / FSDP the
full weights are gathered (`accelerator.get_state_dict`) for that save.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmboundary.data.images import load_image
from mmboundary.records import Example, GeneratedChain
from mmboundary.statements.granularity import answer_level
from mmboundary.training.loop import response_token_count, train_supervised

log = logging.getLogger("mmboundary.sft")


def sft_records(examples: Mapping[str, Example], chains: Sequence[GeneratedChain],
                levels: Mapping[tuple[str, int], int], write_statement, write_chain,
                *, drop_unanswered: bool = False,
                granularity: str = "step") -> tuple[list[dict[str, Any]], dict[str, int]]:
    """SFT records (plain dicts, the columns of the `datasets` dataset) and counts of what was
    left out.

    - `levels[(example_id, step_index)]`: the internal level of each step (estimate stage);
    - `write_statement(level) -> str`: the forward mapping (seeded);
    - `write_chain(steps, statements) -> str`: the output format writer (`statements.chain_format`).

    A chain with no steps, or with a step that has no level, is left out and counted (never
    given an invented level); so is a chain that states no answer when `drop_unanswered`.
    `granularity="answer"`: one statement, after the final step, of the answer's level
    (`statements.granularity.answer_level` of the steps' levels); `levels` then holds that one level.
    """
    records: list[dict[str, Any]] = []
    skipped = {"no_steps": 0, "missing_level": 0, "unanswered": 0, "unknown_example": 0}
    for chain in chains:
        ex = examples.get(chain.example_id)
        if ex is None:
            skipped["unknown_example"] += 1
            continue
        if not chain.steps:
            skipped["no_steps"] += 1
            continue
        if drop_unanswered and chain.answer is None:
            skipped["unanswered"] += 1
            continue
        lv = [levels.get((chain.example_id, i)) for i in range(len(chain.steps))]
        if any(v is None for v in lv):
            skipped["missing_level"] += 1
            continue
        if granularity == "answer":
            lv = [answer_level([int(v) for v in lv])]
            statements = [None] * (len(chain.steps) - 1) + [write_statement(lv[0])]
        else:
            statements = [write_statement(int(v)) for v in lv]
        records.append({
            "example_id": ex.id,
            "image": str(ex.image),
            "question": ex.question,
            "choices": list(ex.choices) if ex.choices else None,
            "response": write_chain([s.text for s in chain.steps], statements),
            "levels": [int(v) for v in lv],
            "statements": statements,
        })
    return records, skipped


def _gathered_save_needed(accelerator) -> bool:
    """Whether the parameters are partitioned over processes (DeepSpeed ZeRO-3, FSDP), so that
    saving needs `accelerator.get_state_dict`."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        plugin = accelerator.state.deepspeed_plugin
        return plugin is not None and int(plugin.zero_stage) == 3
    return False


def lora_wrap(model, cfg):
    """PEFT LoRA adapters on the language model's projections named in `cfg.lora_targets`."""
    from peft import LoraConfig, get_peft_model

    names = "|".join(cfg.lora_targets)
    # a regex over full module names: only the language model's layers, never the vision tower
    target = rf".*language_model.*\.({names})"
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=target, bias="none")
    return get_peft_model(model, lcfg)


def train_sft(run_cfg, vlm, records: Sequence[Mapping[str, Any]], out_dir: Path, accelerator,
              replay: Sequence[Mapping[str, Any]] = ()) -> dict:
    """Fine-tune `vlm` on SFT records (plus `replay` items, same columns); save the model to
    `out_dir/model` (and, for LoRA, the adapter to `out_dir/adapter`). Checkpoints go to
    `out_dir/checkpoints` and are resumed."""
    cfg = run_cfg.sft
    items = list(records) + list(replay)
    images = {r["image"]: load_image(r["image"]) for r in items}
    if cfg.finetune == "lora":
        vlm.model = lora_wrap(vlm.model, cfg)

    def collate(batch: list[Mapping[str, Any]]) -> dict:
        return dict(vlm.encode([vlm.prompt_text(r["question"], r["choices"]) for r in batch],
                               [images[r["image"]] for r in batch], [r["response"] for r in batch]))

    summary = train_supervised(vlm.model, items, collate, cfg.train, seed=run_cfg.seed, accelerator=accelerator,
                               description="sft", checkpoint_dir=out_dir / "checkpoints",
                               save_every=cfg.save_every, weight_fn=response_token_count)
    wrapped = vlm.model
    model = accelerator.unwrap_model(wrapped)
    full = None
    if _gathered_save_needed(accelerator):  # parameters partitioned over processes: gather them (all must call)
        if cfg.finetune == "lora":
            raise ValueError("sft: LoRA under DeepSpeed ZeRO-3 or FSDP is not supported (the adapters cannot be "
                             "merged into partitioned weights); use DDP or ZeRO-2 for LoRA")
        full = accelerator.get_state_dict(wrapped)
    if accelerator.is_main_process:
        if cfg.finetune == "lora":
            model.save_pretrained(out_dir / "adapter")
            model = model.merge_and_unload()
        vlm.model = model
        vlm.save(out_dir / "model")
        if full is not None:  # the local parameters are partitions: write the gathered weights over them
            model.save_pretrained(out_dir / "model", state_dict=full)
    else:
        vlm.model = model
    accelerator.wait_for_everyone()
    summary["items"] = len(items)
    summary["replay_items"] = len(replay)
    summary["finetune"] = cfg.finetune
    return summary
