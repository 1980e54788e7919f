"""Stage `evaluate` (method.md section 6): evaluate/chains_<model>_<split>.jsonl and
evaluate/metrics.json: accuracy and the confidence columns (Acc, ECE, MECE, F1, AUROC, Brier and
its parts, level shares, parsed share) of the vanilla model's internal confidence and of each
trained model's expressed confidence, each with its 95 % bootstrap intervals over questions
(`intervals`), and per split the reference rows (`references`: constant level, step-kind prior;
`evaluation.references`) on the vanilla model's chains. The per-question scores behind every row
go to evaluate/scores_<row>_<split>.jsonl, so that `compare` can pair rows question by question
(docs/measurement.md)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

from rich.markup import escape
from rich.table import Table

from mmboundary.artifacts import (
    SplitReferences,
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
from mmboundary.evaluation.bootstrap import metric_intervals, question_scores
from mmboundary.evaluation.expressed import chain_levels, confidence_report
from mmboundary.evaluation.metrics import accuracy_summary
from mmboundary.evaluation.references import (
    ConstantReference,
    KindLevel,
    KindPriorReference,
    constant_chain_levels,
    constant_level,
    kind_prior_chain_levels,
    kind_table,
    train_steps,
)
from mmboundary.generation import chain_record, expressed_chain_record, generate_texts
from mmboundary.io import atomic_write_json
from mmboundary.judging import judge_chains, make_step_judge, reusable_similarity
from mmboundary.models.factory import load_vlm
from mmboundary.progress import report_console
from mmboundary.records import GeneratedChain
from mmboundary.runs import Run
from mmboundary.stages.common import begin_stage_once
from mmboundary.stages.estimate import print_signal_table
from mmboundary.statements.chain_format import parse_chains

log = logging.getLogger("mmboundary.pipeline")

#: The intervals' table: which of `evaluation.bootstrap.METRICS` it shows, under which heading.
INTERVAL_COLUMNS = (("accuracy", "Acc"), ("ece", "ECE"), ("mece", "MECE"), ("auroc", "AUROC"), ("brier", "Brier"),
                    ("brier_reliability", "Brier rel"), ("brier_resolution", "Brier res"))


class ReferenceChoice(NamedTuple):
    """The reference rows' levels, chosen once per run on the vanilla model's train steps."""

    level: int
    train_steps: int
    train_accuracy: float
    kinds: tuple[KindLevel, ...]


def reference_choice(run: Run) -> ReferenceChoice | None:
    """The levels of the reference rows (`evaluation.references`) from the estimate stage's train
    chains of the vanilla model; None, with the reason logged, when there are none to choose on."""
    path = run.stage_dir("estimate") / "chains_train.jsonl"
    if not run.is_complete("estimate") or not path.exists():
        log.info("evaluate: no reference rows (the estimate stage's train chains %s are missing)", path)
        return None
    kinds, truths = train_steps(read_chains(path))
    if not truths:
        log.warning("evaluate: no reference rows (no train step of %s has a known truth)", path)
        return None
    return ReferenceChoice(level=constant_level(truths), train_steps=len(truths),
                           train_accuracy=sum(truths) / len(truths), kinds=kind_table(kinds, truths))


def score_row(out: Path, row: str, split: str, chains: list[GeneratedChain], levels) -> dict:
    """Write `scores_<row>_<split>.jsonl` (one `QuestionScores` per chain) and return the row's
    intervals (metric -> estimate, low, high) as metrics.json holds them."""
    questions = [question_scores(c, lv) for c, lv in zip(chains, levels)]
    write_jsonl(out / f"scores_{row}_{split}.jsonl", questions)
    return {k: v.model_dump() for k, v in metric_intervals(questions).items()}


def model_row(run: Run, split: str, name: str, chains: list[GeneratedChain], expressed: bool, internal: bool,
              f1: float | None) -> dict:
    """A model's row of metrics.json: its accuracy summary, the report of its expressed levels
    (trained models) or internal levels (the vanilla model when the estimate stage's levels
    apply: `internal`), F1, and the intervals; writes its per-question scores."""
    row = {**accuracy_summary(chains)}
    lv = [[None] * len(c.steps) for c in chains]  # no confidence: a vanilla model without internal levels
    if expressed:
        lv = [chain_levels(c) for c in chains]
        row["expressed"] = confidence_report(chains, lv, f1=f1).model_dump()
    elif internal:
        levels = read_step_levels(run.stage_dir("estimate") / f"steps_{split}.jsonl")
        lv = [[levels.get((c.example_id, i)) for i in range(len(c.steps))] for c in chains]
        row["internal"] = confidence_report(chains, lv, f1=f1).model_dump()
    row["f1"] = f1
    row["intervals"] = score_row(run.stage_dir("evaluate"), name, split, chains, lv)
    return row


def reference_rows(out: Path, split: str, chains: list[GeneratedChain], choice: ReferenceChoice,
                   f1: float | None) -> dict:
    """The `references` block of a split: both reference rows on the vanilla model's chains."""
    const = constant_chain_levels(chains, choice.level)
    prior = kind_prior_chain_levels(chains, {k.kind: k.level for k in choice.kinds}, choice.level)
    return SplitReferences(
        constant=ConstantReference(level=choice.level, train_steps=choice.train_steps,
                                   train_accuracy=choice.train_accuracy,
                                   report=confidence_report(chains, const, f1=f1),
                                   intervals=score_row(out, "constant", split, chains, const)),
        kind_prior=KindPriorReference(levels=choice.kinds, fallback=choice.level,
                                      report=confidence_report(chains, prior, f1=f1),
                                      intervals=score_row(out, "kind_prior", split, chains, prior)),
    ).model_dump()


def stage_evaluate(run: Run) -> dict:
    """Accuracy and confidence columns (Acc, ECE, MECE, F1, AUROC, Brier, levels, parsed share)
    per split, for the vanilla model's internal confidence and each trained model's expressed
    confidence (method.md section 6)."""
    cfg = run.config
    out = begin_stage_once(run, "evaluate")
    device = make_accelerator(cfg.device).device
    main = is_main_process()  # under several processes: generation is sharded, the rest is rank 0's
    matcher = SentenceSimilarity(cfg.evaluate.match_model, kind=cfg.evaluate.match_kind) if main else None
    judge = make_step_judge(cfg.judge, reusable_similarity(cfg.judge, matcher)) if main else None
    mapper = None
    loaded: dict[str, object] = {}
    results: dict[str, dict] = {}
    choice = reference_choice(run) if main else None
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
            chains = judge_chains(chains, examples, judge)  # reused estimate chains too: one judge per run
            write_jsonl(out / f"chains_{name}_{split}.jsonl", chains)
            f1 = chains_f1(chains, examples, matcher, cfg.evaluate.match_threshold)
            results[split][name] = model_row(run, split, name, chains, expressed, reuse is not None, f1)
            if name == "vanilla" and choice is not None:
                results[split]["references"] = reference_rows(out, split, chains, choice, f1)
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


def _fmt(x) -> str:
    return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def _table_rows(results: dict[str, dict]):
    """(split, row name, metrics row or None, confidence report, intervals) of every model and
    reference row, in order."""
    for split, models in results.items():
        for name, m in models.items():
            if "answer_accuracy" in m:
                yield split, name, m, m.get("expressed") or m.get("internal") or {}, m.get("intervals") or {}
        refs = models.get("references") or {}
        if refs.get("constant"):
            r = refs["constant"]
            yield split, f"ref: constant L{r['level']}", None, r["report"], r["intervals"]
        if refs.get("kind_prior"):
            r = refs["kind_prior"]
            yield split, "ref: kind prior", None, r["report"], r["intervals"]


def print_results(results: dict[str, dict]) -> None:
    """The paper's columns per split and model (and reference row): Acc, ECE, MECE, F1, AUROC,
    Brier, the share of steps with a parsed confidence, and the level shares (and "MECE matched",
    the paper's Fig. 6 MECE over matched steps only, when a step judge matched steps); then, when
    the rows have them, the 95 % bootstrap intervals of the main metrics."""
    table = Table(title="mmboundary evaluation (confidence: vanilla = internal levels, others = expressed)")
    matched = any(c.get("mece_matched") is not None for _, _, _, c, _ in _table_rows(results))
    cols = ("split", "model", "Acc", "ECE", "MECE", *(("MECE matched",) if matched else ()), "F1", "AUROC", "Brier",
            "parsed", "levels 1-5 (%)")
    for col in cols:
        table.add_column(col, justify="left" if col in ("split", "model") else "right")
    for split, name, m, c, _ in _table_rows(results):
        shares = c.get("level_shares") or {}
        levels = " ".join(f"{100 * shares[k]:.0f}" for k in sorted(shares, key=int)) if shares else "-"
        acc = m["answer_accuracy"] if m is not None else c.get("accuracy")
        f1 = m.get("f1") if m is not None else c.get("f1")
        table.add_row(split, name, _fmt(acc), _fmt(c.get("ece")), _fmt(c.get("mece")),
                      *((_fmt(c.get("mece_matched")),) if matched else ()), _fmt(f1),
                      _fmt(c.get("auroc")), _fmt(c.get("brier")), _fmt(c.get("parsed_share")), levels)
    report_console().print(table)
    print_intervals(results)


def print_intervals(results: dict[str, dict]) -> None:
    """The 95 % percentile bootstrap intervals over questions, `[low, high]` per metric (nothing
    printed when no row has intervals)."""
    rows = [(split, name, iv) for split, name, _, _, iv in _table_rows(results) if iv]
    if not rows:
        return
    table = Table(title=escape("95% bootstrap intervals over questions, [low, high] (docs/measurement.md)"))
    for col in ("split", "model", *(h for _, h in INTERVAL_COLUMNS)):
        table.add_column(col, justify="left" if col in ("split", "model") else "right")
    for split, name, iv in rows:
        cells = [f"[{_fmt(iv[k]['low'])}, {_fmt(iv[k]['high'])}]" if k in iv and iv[k]["low"] is not None else "-"
                 for k, _ in INTERVAL_COLUMNS]
        table.add_row(split, name, *cells)
    report_console().print(table)
