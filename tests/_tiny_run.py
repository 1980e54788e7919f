"""A tiny run for the tests that load a model through `mmboundary.api` (test_api, test_serve,
test_browser): data-free base, estimate and sft stages of random tiny models."""

from __future__ import annotations

from pathlib import Path


def build_tiny_run(root: Path, image_dir: Path) -> tuple[Path, list]:
    """A run with complete data-free base, estimate and sft stages and three benchmark examples
    whose images are in `image_dir`; returns (root, examples)."""
    from mmboundary.confidence.fusion import Levels, Normalizer, SignalRange
    from mmboundary.config import load_config
    from mmboundary.data.benchmark import BenchmarkSpec, generate_examples
    from mmboundary.models import ModelSpec, build_tiny, train_tokenizer
    from mmboundary.runs import Run
    from mmboundary.training.base import tokenizer_corpus

    spec = ModelSpec(text_num_layers=1, text_hidden_size=32, text_intermediate_size=64, vision_hidden_size=32,
                     vision_num_layers=1, vision_intermediate_size=64, max_length=160)
    examples = generate_examples(BenchmarkSpec(n_train=3, n_test=0, n_ood=0), "train", image_dir)
    tokenizer = train_tokenizer(tokenizer_corpus(examples) + [f"confidence {k}/5" for k in range(1, 6)] * 5, 500)
    cfg = load_config(None, ["statements.kind=numeric", "estimate.signals=[lnlp,mte]",
                             "estimate.fusion.ablate=[token_sar,clip_score]", "generation.max_new_tokens=16",
                             "device=cpu"])
    run = Run.open(root, cfg)
    build_tiny(tokenizer, spec, seed=0).save(root / "base" / "model")
    run.mark_complete("base")
    Normalizer(ranges={"lnlp": SignalRange(lo=1.0, hi=500.0, count=10),
                       "mte": SignalRange(lo=0.0, hi=7.0, count=10)}).save(root / "estimate" / "normalizer.json")
    Levels(kind="meanstd", thresholds=(0.2, 0.4, 0.6, 0.8), mean=0.5, std=0.2, count=10).save(
        root / "estimate" / "levels.json")
    run.mark_complete("estimate")
    build_tiny(tokenizer, spec, seed=1).save(root / "sft" / "model")
    run.mark_complete("sft")
    return root, examples
