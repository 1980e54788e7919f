"""Worker of `tests/test_distributed.py`: the SFT warm-up (`training.sft.train_sft`, the real
stage code) on a tiny VLM and hand-made records, run by one process (`python _dist_sft_worker.py
OUT`) or under `accelerate launch` (DDP on gloo, or DeepSpeed with `--mode deepspeed`).

Every process builds the same tokenizer, model and records (seeded); the global batch is
`--batch` items (each process takes its slice); the main process writes OUT/model (the trained
model), OUT/checkpoints (every `--save-every` steps) and OUT/summary.json. Responses have
different lengths, so a loss averaged per process instead of per global token would not match
one process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--mode", choices=["ddp", "deepspeed"], default="ddp")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--save-every", type=int, default=2)
    args = ap.parse_args()

    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs
    from PIL import Image, ImageDraw

    from mmboundary.config import load_config
    from mmboundary.models.factory import build_tiny
    from mmboundary.models.spec import ModelSpec
    from mmboundary.models.tokenizer import train_tokenizer
    from mmboundary.training.sft import train_sft

    torch.set_num_threads(1)
    if args.mode == "deepspeed":
        # DeepSpeed plugin from the launcher's config; on CPU (DS_ACCELERATOR=cpu) accelerate needs
        # the gloo backend named (see mmboundary.distributed.accelerator_options)
        acc = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
    else:
        acc = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    out = Path(args.out)
    images = out / "images"
    if acc.is_main_process:
        images.mkdir(parents=True, exist_ok=True)
        for i in range(4):
            img = Image.new("RGB", (48, 48), "white")
            ImageDraw.Draw(img).rectangle((4 + 5 * i, 6, 30, 34), fill=["red", "blue", "green", "purple"][i])
            img.save(images / f"{i}.png")
    acc.wait_for_everyone()

    steps = ["There are 2 circles.", "There is 1 red square.", "2 plus 1 is 3.", "So the answer is 3."]
    statements = ["I am quite sure.", "I am not sure.", "I am certain."]
    records = []
    for i in range(10):  # 1 to 4 steps: responses of different lengths
        chain = " ".join(f"{steps[(i + j) % 4]} {statements[(i * j) % 3]}" for j in range(1 + i % 4))
        records.append({"example_id": f"e{i}", "image": str(images / f"{i % 4}.png"),
                        "question": "How many shapes?", "choices": ["2", "3"] if i % 3 == 0 else None,
                        "response": chain, "levels": [], "statements": []})
    corpus = [r["response"] for r in records] + ["How many shapes?", "Question: Answer: 2 3"]
    tok = train_tokenizer(corpus * 3, 400)
    spec = ModelSpec(text_num_layers=1, text_hidden_size=32, text_intermediate_size=64, vision_hidden_size=32,
                     vision_num_layers=1, vision_intermediate_size=64, max_length=160)
    vlm = build_tiny(tok, spec, seed=0)
    cfg = load_config(None, [f"sft.train.batch_size={args.batch}", f"sft.train.max_steps={args.steps}",
                             "sft.train.lr=3e-3", "sft.train.warmup_ratio=0", "sft.train.log_every=1",
                             f"sft.save_every={args.save_every}", "sft.finetune=full"])
    summary = train_sft(cfg, vlm, records, out, acc)
    if acc.is_main_process:
        summary["processes"] = acc.num_processes
        summary["distributed_type"] = str(acc.distributed_type)
        (out / "summary.json").write_text(json.dumps(summary))
    acc.wait_for_everyone()


if __name__ == "__main__":
    main()
