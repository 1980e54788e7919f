"""Stage `evaluate` (method.md section 6): evaluate/chains_<model>_<split>.jsonl and
evaluate/metrics.json: accuracy and the confidence columns (Acc, ECE, MECE, F1, AUROC, Brier,
level shares, parsed share) of the vanilla model's internal confidence and of each trained
model's expressed confidence."""

from __future__ import annotations

import json
import logging

from rich.table import Table

from mmboundary.artifacts import (
    chains_f1,
    evaluated_models,
    load_split,
    make_statement_mapper,
    read_chains,
    read_step_levels,
    reuse_estimate_chains,
    split_names,
    write_jsonl,
)
from mmboundary.confidence.similarity import SentenceSimilarity
from mmboundary.distributed import is_main_process, make_accelerator, shard_map
from mmboundary.evaluation.expressed import chain_levels, confidence_report
from mmboundary.evaluation.metrics import accuracy_summary
from mmboundary.generation import chain_record, expressed_chain_record, generate_texts
from mmboundary.io import atomic_write_json
from mmboundary.models.factory import load_vlm
from mmboundary.progress import report_console
from mmboundary.runs import Run
from mmboundary.stages.common import begin_stage_once
from mmboundary.stages.estimate import print_signal_table
from mmboundary.statements.chain_format import parse_chains

log = logging.getLogger("mmboundary.pipeline")


def stage_evaluate(run: Run) -> dict:
    """Accuracy and confidence columns (Acc, ECE, MECE, F1, AUROC, Brier, levels, parsed share)
    per split, for the vanilla model's internal confidence and each trained model's expressed
    confidence (method.md section 6)."""
    cfg = run.config
    out = begin_stage_once(run, "evaluate")
    device = make_accelerator(cfg.device).device
    main = is_main_process()  # under several processes: generation is sharded, the rest is rank 0's
    matcher = SentenceSimilarity(cfg.evaluate.match_model, kind=cfg.evaluate.match_kind) if main else None
    mapper = None
    loaded: dict[str, object] = {}
    results: dict[str, dict] = {}
    for split in cfg.evaluate.splits:
        if split not in split_names(run):
            log.warning("no %s split; skipped", split)
            continue
        examples = load_split(run, split, cfg.evaluate.limit)
        results[split] = {}
        for name, path, expressed in evaluated_models(run):
            reuse = reuse_estimate_chains(run, split) if name == "vanilla" else None
            if reuse is not None:
                if not main:
                    continue
                chains = read_chains(reuse)
            else:
                if name not in loaded:
                    loaded[name] = load_vlm(path, cfg.model)
                    loaded[name].model.to(device)
                # each process generates its slice; every text comes back once, in example order
                texts = shard_map(lambda mine, name=name, split=split: generate_texts(
                    loaded[name], mine, cfg.generation, description=f"evaluate {name} {split}"), examples)
                if not main:
                    continue
                if expressed:
                    # the matcher is the same offline MiniLM unless configured otherwise: load it once
                    shared = matcher if cfg.evaluate.match_model is None and cfg.evaluate.match_kind == "bi-encoder" \
                        else None
                    mapper = mapper or make_statement_mapper(cfg, encoder=shared)
                    parsed = parse_chains(texts, mapper)
                    chains = [expressed_chain_record(ex, t, p, cfg.statements.granularity)
                              for ex, t, p in zip(examples, texts, parsed)]
                else:
                    chains = [chain_record(ex, t) for ex, t in zip(examples, texts)]
            write_jsonl(out / f"chains_{name}_{split}.jsonl", chains)
            f1 = chains_f1(chains, examples, matcher, cfg.evaluate.match_threshold)
            row = {**accuracy_summary(chains)}
            if expressed:
                row["expressed"] = confidence_report(chains, [chain_levels(c) for c in chains], f1=f1).model_dump()
            elif reuse is not None:
                levels = read_step_levels(run.stage_dir("estimate") / f"steps_{split}.jsonl")
                lv = [[levels.get((c.example_id, i)) for i in range(len(c.steps))] for c in chains]
                row["internal"] = confidence_report(chains, lv, f1=f1).model_dump()
            row["f1"] = f1
            results[split][name] = row
    models = [m.name for m in evaluated_models(run)]
    if not main:
        return {"splits": list(results), "models": models}
    if run.is_complete("estimate"):
        signals = json.loads((run.stage_dir("estimate") / "signals.json").read_text("utf-8"))
        for split in results:
            if split in signals:
                results[split]["vanilla_internal_signals"] = signals[split]
        print_signal_table({k: v for k, v in signals.items() if k in results})
    atomic_write_json(out / "metrics.json", results)
    print_results(results)
    return {"splits": list(results), "models": models}


def print_results(results: dict[str, dict]) -> None:
    """The paper's columns per split and model: Acc, ECE, MECE, F1, AUROC, Brier, the share of
    steps with a parsed confidence, and the level shares."""
    table = Table(title="mmboundary evaluation (confidence: vanilla = internal levels, others = expressed)")
    for col in ("split", "model", "Acc", "ECE", "MECE", "F1", "AUROC", "Brier", "parsed", "levels 1-5 (%)"):
        table.add_column(col, justify="left" if col in ("split", "model") else "right")

    def f(x):
        return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    for split, models in results.items():
        for name, m in models.items():
            if "answer_accuracy" not in m:
                continue
            c = m.get("expressed") or m.get("internal") or {}
            shares = c.get("level_shares") or {}
            levels = " ".join(f"{100 * shares[k]:.0f}" for k in sorted(shares, key=int)) if shares else "-"
            table.add_row(split, name, f(m["answer_accuracy"]), f(c.get("ece")), f(c.get("mece")), f(m.get("f1")),
                          f(c.get("auroc")), f(c.get("brier")), f(c.get("parsed_share")), levels)
    report_console().print(table)
