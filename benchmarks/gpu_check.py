"""GPU check: the pipeline on CUDA in bf16 with small settings; wall time and peak GPU memory per stage.

    python benchmarks/gpu_check.py                       # built-in default (tiny model), small settings
    python benchmarks/gpu_check.py --tiny-real qwen2-vl  # the pretrained path: a tiny random Qwen2-VL
    python benchmarks/gpu_check.py --tiny-real llava-next
    python benchmarks/gpu_check.py -c configs/models/qwen2-vl-7b.yaml --set model.path=/models/qwen2-vl-7b
    python benchmarks/gpu_check.py --full                # the default's own sizes (no small settings)

Runs every stage of the config in this process with `device: cuda` and `model.dtype: bfloat16`,
one after the other in a fresh run directory (`pipeline.run_stage`), resetting
`torch.cuda.reset_peak_memory_stats()` before each stage and reading
`torch.cuda.max_memory_allocated()` after it. Prints a table and writes
`benchmarks/results/gpu_check.json` (or `--out`): the card's name, torch and CUDA versions, the
settings, and per stage the wall seconds and peak allocated GPU memory (MiB).

`--tiny-real ARCH` builds a tiny random checkpoint of the paper's architecture (`models.tiny_real`)
and a tiny CLIP in the run folder and runs the real-model overlay on them (no `base` stage, LoRA,
gradient checkpointing; the default MiniLM bi-encoder replaces the cross-encoder): it checks the
`kind: pretrained` code path on the GPU without any download.

Without CUDA it exits at once with status 2 and a message saying so (nothing is run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Small settings for the built-in default: minutes, not the full run's ten.
SMALL = [
    "data.benchmark.n_train=256", "data.benchmark.n_test=64", "data.benchmark.n_ood=64",
    "base.vlm.epochs=2", "base.clip.epochs=2",
    "sft.train.epochs=1", "rl.iterations=4",
]
# Small settings for a pretrained checkpoint (the real-model overlays or --tiny-real).
SMALL_PRETRAINED = [
    "data.benchmark.n_train=32", "data.benchmark.n_test=16", "data.benchmark.n_ood=16",
    "generation.max_new_tokens=64", "sft.train.max_steps=4", "sft.train.batch_size=4",
    "rl.iterations=2", "rl.rollout_batch_size=4", "rl.samples_per_question=2", "rl.max_new_tokens=64",
    "rl.minibatch_size=4", "rl.ppo_epochs=1",
]


def no_cuda_message() -> str | None:
    """Why this machine cannot run the check (None when it can)."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover
        return f"torch does not import: {e}"
    if not torch.cuda.is_available():
        built = torch.version.cuda
        return ("gpu_check: no CUDA device is available (torch " + torch.__version__
                + (f", built for CUDA {built}" if built else ", a CPU-only build") + "); nothing was run. "
                "Run it on a machine with an NVIDIA GPU; on CPU use benchmarks/run_default.py.")
    return None


def _tiny_real(arch: str, folder: Path) -> list[str]:
    """Build the stand-in checkpoints; return the config files and overrides that use them."""
    from mmboundary.models.clip import build_clip
    from mmboundary.models.spec import ClipSpec
    from mmboundary.models.tiny_real import save_tiny_llava_next, save_tiny_qwen2_vl
    from mmboundary.models.tokenizer import train_tokenizer
    from mmboundary.statements.pool import all_statements

    texts = [f"How many {c} objects are there? There are {n} {c} objects. So the answer is {n}."
             for c in ("red", "green", "blue") for n in range(5)] + list(all_statements())
    tok = train_tokenizer(texts, 700)
    save = {"llava-next": save_tiny_llava_next, "qwen2-vl": save_tiny_qwen2_vl}[arch]
    ckpt = save(folder / arch, tok)
    clip = build_clip(tok, ClipSpec()).save(folder / "clip")
    return [f"model.path={ckpt}", f"clip.path={clip}", "model.max_length=1024",
            "estimate.similarity_model=null", "estimate.similarity_kind=bi-encoder",
            "evaluate.match_model=null", "evaluate.match_kind=bi-encoder", "evaluate.match_threshold=null"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", action="append", default=None, help="config file(s), layered (default: built-in)")
    ap.add_argument("--set", action="append", default=[], help="override key=value (repeatable)")
    ap.add_argument("--tiny-real", choices=["llava-next", "qwen2-vl"], default=None)
    ap.add_argument("--full", action="store_true", help="no small settings")
    ap.add_argument("--run-dir", default=None, help="a new folder to keep the run in (default: temporary)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    args = ap.parse_args(argv)

    why = no_cuda_message()
    if why is not None:
        print(why, file=sys.stderr)
        return 2

    import torch

    from mmboundary import pipeline
    from mmboundary.config import load_config
    from mmboundary.runs import Run

    os.environ.setdefault("MMBOUNDARY_PROGRESS", "0")
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="mmb-gpu-")) / "run"
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists: the check times a fresh run")
    configs = list(args.config or [])
    overrides: list[str] = []
    if args.tiny_real:
        configs = [str(ROOT / "configs" / "models" / ("llava-next-7b.yaml" if args.tiny_real == "llava-next"
                                                       else "qwen2-vl-7b.yaml"))]
        overrides += _tiny_real(args.tiny_real, run_dir.parent / "stand-ins")
    probe = load_config(configs or None, overrides + args.set)
    pretrained = probe.model.path is not None
    if not args.full:
        overrides += SMALL_PRETRAINED if pretrained else SMALL
    overrides += ["device=cuda", "model.dtype=bfloat16"] + args.set
    cfg = load_config(configs or None, overrides)
    run = Run.open(run_dir, cfg)

    card = torch.cuda.get_device_name(0)
    stages = {}
    started = time.time()
    for stage in cfg.stages:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        pipeline.run_stage(run, stage)
        torch.cuda.synchronize()
        stages[stage] = {"seconds": round(time.time() - t0, 1),
                         "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)}
    result = {
        "card": card,
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "configs": configs,
        "overrides": overrides,
        "small_settings": not args.full,
        "wall_seconds": round(time.time() - started, 1),
        "stages": stages,
        "run_dir": str(run_dir),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    metrics_path = run_dir / "evaluate" / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        result["answer_accuracy"] = {split: {m: row.get("answer_accuracy") for m, row in rows.items()
                                             if isinstance(row, dict) and "answer_accuracy" in row}
                                     for split, rows in metrics.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{card}, torch {torch.__version__}, CUDA {torch.version.cuda}, bf16"
          f"{', small settings' if not args.full else ''}")
    print(f"{'stage':<10} {'seconds':>9} {'peak GPU MiB':>13}")
    for stage, s in stages.items():
        print(f"{stage:<10} {s['seconds']:>9.1f} {s['peak_gpu_mib']:>13.1f}")
    print(f"{'total':<10} {result['wall_seconds']:>9.1f}\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
