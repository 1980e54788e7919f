"""Stage `data`: data/{train,test,ood}.jsonl (the built-in benchmark, or a validated copy of the
user's files, in the JSONL format), data/images/."""

from __future__ import annotations

from mmboundary.data.benchmark import generate_benchmark
from mmboundary.data.jsonl import read_examples, write_examples
from mmboundary.data.loading import load_dataset_file
from mmboundary.models.factory import load_processor
from mmboundary.models.limits import check_prompt_lengths
from mmboundary.progress import progress_enabled
from mmboundary.runs import Run


def stage_data(run: Run) -> dict:
    cfg = run.config.data
    out = run.begin_stage("data")
    counts: dict[str, int] = {}
    if cfg.source == "benchmark":
        paths = generate_benchmark(cfg.benchmark, out, progress=progress_enabled())
        for split, p in paths.items():
            counts[split] = sum(1 for line in p.open() if line.strip())
    else:
        for split, src, image_dir, dataset in cfg.split_files():
            examples = load_dataset_file(src, fmt=cfg.source, image_dir=image_dir,
                                         split=split if cfg.match_split else None,
                                         **({"dataset": dataset} if cfg.source == "annotated" else {}))
            counts[split] = write_examples(examples, out / f"{split}.jsonl")
    summary = {"source": cfg.source, "examples": counts}
    if run.config.model.path is not None:  # a checkpoint: no prompt may have its image tokens cut
        processor = load_processor(run.config.model.path, run.config.model)
        summary["longest_prompt"] = max(check_prompt_lengths(
            processor, read_examples(out / f"{split}.jsonl", check_images=False), run.config.model.max_length,
            file=out / f"{split}.jsonl") for split in counts)
    return summary
