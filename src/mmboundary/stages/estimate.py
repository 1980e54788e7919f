"""Stage `estimate`: the vanilla model's chains and per-step internal confidence (method.md
section 2): estimate/chains_<split>.jsonl, steps_<split>.jsonl (four signals, normalised
confidences, fused confidence, level, exact correctness), normalizer.json and levels.json (fitted
on train), signals.json (AUROC / ECE / Brier per signal), reliability_fused_<split>.png."""

from __future__ import annotations

import json

from rich.table import Table

from mmboundary.artifacts import load_split, resolve_vlm_path, split_names, write_jsonl
from mmboundary.confidence.estimator import estimate_signals
from mmboundary.confidence.fusion import fit_levels, fit_normalizer, fuse_steps, level_probability, score_steps
from mmboundary.confidence.similarity import SentenceSimilarity
from mmboundary.distributed import is_main_process, make_accelerator, shard_map
from mmboundary.errors import RunError
from mmboundary.evaluation.calibration import calibration_report
from mmboundary.evaluation.plots import reliability_diagram
from mmboundary.generation import generate_chains
from mmboundary.io import atomic_write_json, atomic_write_text
from mmboundary.judging import make_step_judge, reusable_similarity
from mmboundary.models.clip import load_clip
from mmboundary.models.factory import load_vlm
from mmboundary.progress import report_console
from mmboundary.runs import Run
from mmboundary.stages.common import begin_stage_once

#: The columns of the printed signal table, in order.
SIGNAL_COLUMNS = ("lnlp", "mte", "token_sar", "clip_score", "fused_own", "fused", "level")


def signal_metrics(steps, confidences, extra: dict[str, list[float]] | None = None) -> dict:
    """AUROC and ECE against step correctness of each normalised signal, the fused confidence,
    the level probability p(level), and any `extra` per-step columns, over steps whose
    correctness is known."""
    keep = [i for i, s in enumerate(steps) if s.correct is not None]
    known = [(steps[i], confidences[i]) for i in keep]
    if not known:
        return {}
    y = [int(s.correct) for s, _ in known]
    columns: dict[str, list[float]] = {}
    for name in known[0][1].confidences:
        columns[name] = [c.confidences[name] for _, c in known]
    columns["fused"] = [c.fused for _, c in known]
    columns["level"] = [level_probability(c.level) for _, c in known]
    for name, values in (extra or {}).items():
        columns[name] = [values[i] for i in keep]
    out = {}
    for name, values in columns.items():
        r = calibration_report(values, y)
        out[name] = {"auroc": r.auroc, "ece": r.ece, "brier": r.brier}
    out["n_steps"] = len(known)
    out["step_accuracy"] = sum(y) / len(y)
    return out


def print_signal_table(report: dict) -> None:
    """AUROC / ECE of every signal per split (`signals.json`), as a console table."""
    table = Table(title="internal confidence vs step correctness (AUROC / ECE)")
    table.add_column("split")
    for n in SIGNAL_COLUMNS:
        table.add_column(n, justify="right")
    for split, m in report.items():
        table.add_row(split, *[(f"{m[n]['auroc']:.3f} / {m[n]['ece']:.3f}" if n in m and m[n]["auroc"] is not None
                                else "-") for n in SIGNAL_COLUMNS])
    report_console().print(table)


def stage_estimate(run: Run) -> dict:
    """Generate the vanilla model's chains, compute the four signals per step, fit the
    normaliser and the levels on train, score every split."""
    cfg = run.config
    ecfg = cfg.estimate
    out = begin_stage_once(run, "estimate")
    device = make_accelerator(cfg.device).device
    vlm = load_vlm(resolve_vlm_path(run), cfg.model)
    vlm.model.to(device)
    clip = None
    if "clip_score" in ecfg.signals:
        clip = load_clip(cfg.clip.path or run.require("base") / "clip")
        clip.model.to(device)
    similarity = SentenceSimilarity(ecfg.similarity_model, kind=ecfg.similarity_kind) \
        if "token_sar" in ecfg.signals else None
    judge = make_step_judge(cfg.judge, reusable_similarity(cfg.judge, similarity))
    splits = ["train"] + [s for s in ecfg.splits if s != "train" and s in split_names(run)]
    per_split = {}
    for split in splits:
        limit = ecfg.train_examples if split == "train" else ecfg.limit
        examples = load_split(run, split, limit)

        def chains_and_signals(mine, split=split):
            # under several processes: this process's slice of the examples (distributed.shard_map)
            chains = generate_chains(vlm, mine, cfg.generation, description=f"estimate: generate {split}",
                                     judge=judge)
            steps = estimate_signals(vlm, clip, similarity, mine, chains, batch_size=ecfg.batch_size,
                                     signals=tuple(ecfg.signals))
            by_id: dict[str, list] = {}
            for st in steps:
                by_id.setdefault(st.example_id, []).append(st)
            return [(c, by_id.get(c.example_id, [])) for c in chains]

        done = shard_map(chains_and_signals, examples)
        chains = [c for c, _ in done]
        if len({c.example_id for c in chains}) != len(chains):
            raise RunError(f"{run.root}: the {split} split has repeated example ids")
        if is_main_process():
            write_jsonl(out / f"chains_{split}.jsonl", chains)
        per_split[split] = [st for _, steps in done for st in steps]
    if not is_main_process():  # the fits and files below are the main process's
        return {"steps": {k: len(v) for k, v in per_split.items()}}
    normalizer = fit_normalizer(per_split["train"])
    normalizer.save(out / "normalizer.json")
    levels = fit_levels(fuse_steps(per_split["train"], normalizer, ecfg.fusion), kind=ecfg.fusion.levels,
                        correct=[bool(st.correct) for st in per_split["train"]]
                        if ecfg.fusion.levels == "calibrated" else None)
    levels.save(out / "levels.json")
    report = {}
    for split, steps in per_split.items():
        scored = score_steps(steps, normalizer, levels, ecfg.fusion)
        atomic_write_text(out / f"steps_{split}.jsonl", "".join(
            json.dumps({**s.model_dump(mode="json"), **{k: v for k, v in c.model_dump(mode="json").items()
                                                          if k in ("confidences", "fused", "level")}}) + "\n"
            for s, c in zip(steps, scored)))
        # the paper's fusion (answer steps scored on their own signals), for comparison
        own = fuse_steps(steps, normalizer, ecfg.fusion.model_copy(update={"answer_step": "own"}))
        report[split] = signal_metrics(steps, scored, {"fused_own": own})
        known = [c for c in scored if c.correct is not None]
        if known:
            reliability_diagram([c.fused for c in known], [int(c.correct) for c in known],
                                out / f"reliability_fused_{split}.png",
                                title=f"fused internal confidence, {split} steps")
    atomic_write_json(out / "signals.json", report)
    print_signal_table(report)
    return {"steps": {k: len(v) for k, v in per_split.items()}}
