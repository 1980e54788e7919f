"""The ordered stages of the pipeline. A stage is a function (run) -> summary dict; it reads
only what earlier stages wrote to the run directory, and its marker is written last.

    data      -> data/{train,test,ood}.jsonl   (the built-in benchmark, or a validated copy of
                                                 the user's files, in the JSONL format)
    base      -> base/model/, base/clip/       (vanilla VLM and CLIP; skipped for checkpoints)
    estimate  -> estimate/chains_<split>.jsonl, steps_<split>.jsonl (four signals, normalised
                 confidences, fused confidence, level, exact correctness), normalizer.json,
                 levels.json (fitted on train), signals.json (AUROC/ECE per signal)
    sft_data  -> sft_data/dataset/ (a Hugging Face `datasets` dataset: image, question,
                 choices, response with a statement after each step, levels), summary.json
    sft       -> sft/model/ (the warm-up model, a Hugging Face checkpoint), sft/checkpoints/
                 while training (resumed after an interruption, removed at the end)
    rl        -> rl/model/ (the PPO-calibrated model), rl/value_head.safetensors, rl/metrics.jsonl,
                 rl/tensorboard/; rl/checkpoints/ while training
    evaluate  -> evaluate/chains_<model>_<split>.jsonl, evaluate/metrics.json: accuracy and the
                 confidence columns (Acc, ECE, MECE, F1, AUROC, Brier, level shares, parsed share)
                 of the vanilla model's internal confidence and of each trained model's
                 expressed confidence
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.table import Table

from mmboundary.config import RunConfig
from mmboundary.data.jsonl import read_examples, write_examples
from mmboundary.distributed import barrier, is_main_process, shard_map
from mmboundary.errors import RunError
from mmboundary.progress import progress_enabled, report_console
from mmboundary.records import Example
from mmboundary.runs import MARKER, Run, atomic_write_json, atomic_write_text

log = logging.getLogger("mmboundary.pipeline")
console = Console(stderr=True)


def begin_stage_once(run: Run, stage: str, keep: tuple[str, ...] = ()) -> Path:
    """`run.begin_stage` by the main process only, the others waiting until the folder is ready
    (several processes under `accelerate launch`; a plain call with one)."""
    if is_main_process():
        run.begin_stage(stage, keep=keep)
    barrier()
    return run.stage_dir(stage)


def make_accelerator(cfg: RunConfig) -> Accelerator:
    """CPU when asked or when there is no GPU (`distributed.accelerator_options`). Under DDP, parameters that get no gradient in a
    step are allowed (`find_unused_parameters`: e.g. the vision tower's unused post-layernorm)."""
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    from mmboundary.distributed import accelerator_options

    options = accelerator_options(cfg.device)  # also DeepSpeed on CPU (gloo)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    if "backend" in options:
        handlers.append(InitProcessGroupKwargs(backend=options["backend"]))
    return Accelerator(cpu=options["cpu"], kwargs_handlers=handlers)


def split_names(run: Run) -> list[str]:
    return [s for s in ("train", "test", "ood") if (run.stage_dir("data") / f"{s}.jsonl").exists()]


def load_split(run: Run, split: str, limit: int | None = None) -> list[Example]:
    path = run.require("data") / f"{split}.jsonl"
    if not path.exists():
        raise RunError(f"{run.root}: the data stage wrote no {split!r} split")
    examples = read_examples(path, check_images=False)  # checked when the data stage ran
    return examples[:limit] if limit else examples


# --- stages -------------------------------------------------------------------------------------

def stage_data(run: Run) -> dict:
    cfg = run.config.data
    out = run.begin_stage("data")
    counts: dict[str, int] = {}
    if cfg.source == "benchmark":
        from mmboundary.data.benchmark import generate_benchmark

        paths = generate_benchmark(cfg.benchmark, out, progress=progress_enabled())
        for split, p in paths.items():
            counts[split] = sum(1 for line in p.open() if line.strip())
    else:
        from mmboundary.data.loading import load_dataset_file

        for split, src, image_dir, dataset in cfg.split_files():
            examples = load_dataset_file(src, fmt=cfg.source, image_dir=image_dir,
                                         split=split if cfg.match_split else None,
                                         **({"dataset": dataset} if cfg.source == "annotated" else {}))
            counts[split] = write_examples(examples, out / f"{split}.jsonl")
    summary = {"source": cfg.source, "examples": counts}
    if run.config.model.path is not None:  # a checkpoint: no prompt may have its image tokens cut
        from mmboundary.models.factory import load_processor
        from mmboundary.models.limits import check_prompt_lengths

        processor = load_processor(run.config.model.path, run.config.model)
        summary["longest_prompt"] = max(check_prompt_lengths(
            processor, read_examples(out / f"{split}.jsonl", check_images=False), run.config.model.max_length,
            file=out / f"{split}.jsonl") for split in counts)
    return summary


def base_model_dir(run: Run) -> Path | None:
    d = run.stage_dir("base") / "model"
    return d if run.is_complete("base") and (d / "config.json").exists() else None


def stage_base(run: Run) -> dict:
    cfg = run.config
    from mmboundary.models import load_clip, load_vlm
    from mmboundary.training.base import build_base_vlm, init_vision_from_clip, train_base_clip, train_base_vlm

    out = begin_stage_once(run, "base")
    summary: dict = {}
    acc = make_accelerator(cfg)
    train = load_split(run, "train", cfg.base.train_examples)
    vlm = build_base_vlm(cfg, train) if cfg.model.path is None else None
    tokenizer = vlm.tokenizer if vlm is not None else load_vlm(cfg.model.path, cfg.model).tokenizer
    if cfg.clip.path is not None:
        summary["clip"] = f"skipped: clip.path={cfg.clip.path}"
        clip = load_clip(cfg.clip.path)
    else:
        clip, summary["clip"] = train_base_clip(cfg, train, tokenizer, out / "clip", acc)
    if vlm is None:
        summary["vlm"] = f"skipped: model.path={cfg.model.path}"
    else:
        if cfg.base.vision_init == "clip":
            summary["vision_init"] = "clip" if init_vision_from_clip(vlm, clip.model) else "random (shapes differ from CLIP's)"
            log.info("VLM vision tower initialised from: %s", summary["vision_init"])
        summary["vlm"] = train_base_vlm(cfg, vlm, train, out / "model", acc)
    return summary


def write_jsonl(path: Path, records) -> None:
    """Records (pydantic models) as JSONL, atomically."""
    from mmboundary.runs import atomic_write_text

    atomic_write_text(path, "".join(r.model_dump_json() + "\n" for r in records))


def read_chains(path: Path):
    from mmboundary.records import GeneratedChain

    return [GeneratedChain.model_validate_json(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def signal_metrics(steps, confidences, extra: dict[str, list[float]] | None = None) -> dict:
    """AUROC and ECE against step correctness of each normalised signal, the fused confidence,
    the level probability p(level), and any `extra` per-step columns, over steps whose
    correctness is known."""
    from mmboundary.confidence.fusion import level_probability
    from mmboundary.evaluation.calibration import calibration_report

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


def stage_estimate(run: Run) -> dict:
    """Generate the vanilla model's chains, compute the four signals per step, fit the
    normaliser and the levels on train, score every split."""
    cfg = run.config
    ecfg = cfg.estimate
    from mmboundary.confidence.estimator import estimate_signals
    from mmboundary.confidence.fusion import fit_levels, fit_normalizer, fuse_steps, score_steps
    from mmboundary.confidence.similarity import SentenceSimilarity
    from mmboundary.generation import generate_chains
    from mmboundary.models import load_clip, load_vlm

    out = begin_stage_once(run, "estimate")
    device = make_accelerator(cfg).device
    vlm = load_vlm(resolve_vlm_path(run), cfg.model)
    vlm.model.to(device)
    clip = None
    if "clip_score" in ecfg.signals:
        clip = load_clip(cfg.clip.path or run.require("base") / "clip")
        clip.model.to(device)
    similarity = SentenceSimilarity(ecfg.similarity_model, kind=ecfg.similarity_kind) \
        if "token_sar" in ecfg.signals else None
    splits = ["train"] + [s for s in ecfg.splits if s != "train" and s in split_names(run)]
    per_split = {}
    for split in splits:
        limit = ecfg.train_examples if split == "train" else ecfg.limit
        examples = load_split(run, split, limit)

        def chains_and_signals(mine, split=split):
            # under several processes: this process's slice of the examples (distributed.shard_map)
            chains = generate_chains(vlm, mine, cfg.generation, description=f"estimate: generate {split}")
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
            from mmboundary.evaluation.plots import reliability_diagram

            reliability_diagram([c.fused for c in known], [int(c.correct) for c in known],
                                out / f"reliability_fused_{split}.png",
                                title=f"fused internal confidence, {split} steps")
    atomic_write_json(out / "signals.json", report)
    print_signal_table(report)
    return {"steps": {k: len(v) for k, v in per_split.items()}}


def read_step_levels(path: Path) -> dict[tuple[str, int], int]:
    """(example_id, step_index) -> internal level, from an estimate `steps_<split>.jsonl`."""
    out = {}
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if line.strip():
            rec = json.loads(line)
            try:
                out[(rec["example_id"], int(rec["step_index"]))] = int(rec["level"])
            except (KeyError, TypeError, ValueError) as e:
                raise RunError(f"{path}, line {n}: no valid example_id / step_index / level ({e})") from None
    return out


def stage_sft_data(run: Run) -> dict:
    """The vanilla model's own train chains with the statement of each step's internal level
    (method.md section 4, steps 1-3), as a Hugging Face `datasets` dataset."""
    import numpy as np
    from datasets import Dataset

    from mmboundary.statements.chain_format import write_chain
    from mmboundary.training.sft import sft_records

    cfg = run.config
    est = run.require("estimate")
    out = run.begin_stage("sft_data")
    examples = {ex.id: ex for ex in load_split(run, "train", cfg.estimate.train_examples)}
    chains = read_chains(est / "chains_train.jsonl")
    levels = read_step_levels(est / "steps_train.jsonl")
    rng = np.random.default_rng(cfg.sft_data.seed if cfg.sft_data.seed is not None else cfg.seed)
    records, skipped = sft_records(examples, chains, levels, statement_writer(cfg, rng),
                                   write_chain, drop_unanswered=cfg.sft_data.drop_unanswered,
                                   granularity=cfg.statements.granularity)
    if not records:
        raise RunError(f"{est}: no train chain could be turned into an SFT record ({skipped})")
    Dataset.from_list(records).save_to_disk(str(out / "dataset"))
    from mmboundary.evaluation.calibration import level_shares

    summary = {"records": len(records), "steps": sum(len(r["levels"]) for r in records), "skipped": skipped,
               "level_shares": level_shares([v for r in records for v in r["levels"]]),
               "statements": cfg.statements.kind, "granularity": cfg.statements.granularity}
    atomic_write_json(out / "summary.json", summary)
    return summary


def statement_writer(cfg: RunConfig, rng, mapper=None):
    """level -> statement for the SFT data: the mapper's seeded forward mapping (`mapper`, else
    the config's, built only here: the restricted draw below needs no encoder), restricted to
    the first `sft_data.statements_per_level` statements of each level's pool when that is set."""
    k = cfg.sft_data.statements_per_level
    if k is None or cfg.statements.kind == "numeric":
        mapper = mapper or make_statement_mapper(cfg)
        return lambda level: mapper.statement(level, rng)
    from mmboundary.statements.pool import default_pool

    pool = default_pool()
    return lambda level: pool[level][int(rng.integers(min(k, len(pool[level]))))]


def make_statement_mapper(cfg: RunConfig, encoder=None):
    """The forward/backward statement mapping the config names (`statements`); `encoder`: an
    already loaded MiniLM `SentenceSimilarity` to share (None: the mapper loads its own)."""
    from mmboundary.statements.mapping import make_mapper

    options = {}
    if encoder is not None and cfg.statements.kind == "statement":
        options["encoder"] = encoder
    if cfg.statements.min_similarity is not None:
        options["min_similarity"] = cfg.statements.min_similarity
    return make_mapper(cfg.statements.kind, **options)


def stage_sft(run: Run) -> dict:
    """Fine-tune the vanilla model on the sft_data dataset (resumes from its checkpoints)."""
    import shutil

    from datasets import load_from_disk

    from mmboundary.models import load_vlm
    from mmboundary.training.sft import train_sft

    cfg = run.config
    ds = load_from_disk(str(run.require("sft_data") / "dataset"))
    out = begin_stage_once(run, "sft", keep=("checkpoints",))
    acc = make_accelerator(cfg)
    vlm = load_vlm(resolve_vlm_path(run), cfg.model)
    if cfg.model.gradient_checkpointing:
        from mmboundary.models.factory import enable_gradient_checkpointing

        enable_gradient_checkpointing(vlm.model)
    records = ds.to_list()
    replay = []
    if cfg.sft.replay_share > 0:
        from mmboundary.training.base import caption_replay

        n = int(round(len(records) * cfg.sft.replay_share / (1 - cfg.sft.replay_share)))
        replay = caption_replay(load_split(run, "train", cfg.estimate.train_examples), n,
                                cfg.data.benchmark.colors, cfg.seed)
    summary = train_sft(cfg, vlm, records, out, acc, replay=replay)
    if acc.is_main_process:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return summary


def stage_rl(run: Run) -> dict:
    """PPO with per-step rewards from the SFT model (`training.rl`, method.md section 5)."""
    from mmboundary.training.rl import run_rl_stage

    return run_rl_stage(run)


def print_signal_table(report: dict) -> None:
    table = Table(title="internal confidence vs step correctness (AUROC / ECE)")
    table.add_column("split")
    names = ["lnlp", "mte", "token_sar", "clip_score", "fused_own", "fused", "level"]
    for n in names:
        table.add_column(n, justify="right")
    for split, m in report.items():
        table.add_row(split, *[(f"{m[n]['auroc']:.3f} / {m[n]['ece']:.3f}" if n in m and m[n]["auroc"] is not None
                                else "-") for n in names])
    report_console().print(table)


def resolve_vlm_path(run: Run) -> str:
    """The vanilla model of a run: the base stage's, else the configured checkpoint."""
    d = base_model_dir(run)
    if d is not None:
        return str(d)
    if run.config.model.path is not None:
        return run.config.model.path
    raise RunError(f"{run.root}: no vanilla model: run the base stage or set model.path")


def evaluated_models(run: Run) -> list[tuple[str, str, bool]]:
    """(name, checkpoint, writes statements) of every model `evaluate` judges: the vanilla
    model, and the warm-up model once `sft` has completed."""
    models = [("vanilla", resolve_vlm_path(run), False)]
    for stage in ("sft", "rl"):
        if run.is_complete(stage):
            models.append((stage, str(run.stage_dir(stage) / "model"), True))
    return models


def _reuse_estimate_chains(run: Run, split: str) -> Path | None:
    """The estimate stage's vanilla chains of `split` when they are what `evaluate` would
    generate (same examples, greedy either way): no second generation, and the internal levels
    of their steps are known."""
    if not run.is_complete("estimate"):
        return None
    cfg = run.config
    path = run.stage_dir("estimate") / f"chains_{split}.jsonl"
    limit = cfg.estimate.train_examples if split == "train" else cfg.estimate.limit
    return path if path.exists() and limit == cfg.evaluate.limit else None


def chains_f1(chains, examples: list[Example], similarity, threshold: float | None) -> float | None:
    """Mean per-example F1 of the one-to-one step matching against the reference chains
    (method.md section 6), over examples that have a reference chain (None if none has).
    Step texts are matched without their statements."""
    from mmboundary.evaluation.matching import match_chains, mean_f1

    by_id = {ex.id: ex for ex in examples}
    pairs = [(c, by_id[c.example_id]) for c in chains if by_id[c.example_id].chain]
    if not pairs:
        return None
    matches = match_chains([[s.text for s in c.steps] for c, _ in pairs],
                           [[r.text for r in ex.chain] for _, ex in pairs], similarity, threshold)
    return mean_f1(matches)


def stage_evaluate(run: Run) -> dict:
    """Accuracy and confidence columns (Acc, ECE, MECE, F1, AUROC, Brier, levels, parsed share)
    per split, for the vanilla model's internal confidence and each trained model's expressed
    confidence (method.md section 6)."""
    cfg = run.config
    from mmboundary.confidence.similarity import SentenceSimilarity
    from mmboundary.evaluation.expressed import chain_levels, confidence_report
    from mmboundary.evaluation.metrics import accuracy_summary
    from mmboundary.generation import chain_record, expressed_chain_record, generate_texts
    from mmboundary.models import load_vlm

    out = begin_stage_once(run, "evaluate")
    device = make_accelerator(cfg).device
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
            reuse = _reuse_estimate_chains(run, split) if name == "vanilla" else None
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
                    from mmboundary.statements.chain_format import parse_chains

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
    if not main:
        return {"splits": list(results), "models": [m for m, _, _ in evaluated_models(run)]}
    if run.is_complete("estimate"):
        signals = json.loads((run.stage_dir("estimate") / "signals.json").read_text("utf-8"))
        for split in results:
            if split in signals:
                results[split]["vanilla_internal_signals"] = signals[split]
        print_signal_table({k: v for k, v in signals.items() if k in results})
    atomic_write_json(out / "metrics.json", results)
    print_results(results)
    return {"splits": list(results), "models": [m for m, _, _ in evaluated_models(run)]}


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


STAGE_FUNCS: dict[str, Callable[[Run], dict]] = {
    "data": stage_data,
    "base": stage_base,
    "estimate": stage_estimate,
    "sft_data": stage_sft_data,
    "sft": stage_sft,
    "rl": stage_rl,
    "evaluate": stage_evaluate,
}


#: Stages every process runs under `accelerate launch` (sharded training, sharded generation);
#: the others (cheap, single-writer file work) run on the main process while the rest wait.
DISTRIBUTED_STAGES = frozenset({"base", "estimate", "sft", "rl", "evaluate"})


def run_lock(run: Run):
    """The run folder's lock (`locks.hold` on `<run>/.lock`), taken by the main process: a second
    process on the same folder (another `mmboundary run`, a stage command, a comparison) gets a
    clear error naming the process that writes it, instead of both writing the same files. The
    other processes of one `accelerate launch` are the same run and do not take it."""
    import contextlib

    from mmboundary.locks import hold

    if not is_main_process():
        return contextlib.nullcontext()
    return hold(run.root / ".lock", what=f"the run folder {run.root}")


def run_stage(run: Run, stage: str, *, force: bool = False) -> dict | None:
    """Run one stage unless it has completed (or `force`). Returns its summary, None if skipped.
    Holds the run folder's lock (`run_lock`) while it runs."""
    with run_lock(run):
        return _run_stage(run, stage, force=force)


def _run_stage(run: Run, stage: str, *, force: bool = False) -> dict | None:
    barrier()
    complete = run.is_complete(stage)
    # every process has decided before any can write this stage's marker (rank 0 runs a
    # main-only stage without waiting: a late process would otherwise see its marker and skip)
    barrier()
    if complete:
        if not force:
            console.print(f"[dim]stage {stage}: complete, skipped[/dim]")
            log.info("stage %s: complete, skipped", stage)
            return None
        if is_main_process():
            (run.stage_dir(stage) / MARKER).unlink()
        barrier()
    console.print(f"[bold cyan]stage {stage}[/bold cyan]")
    log.info("stage %s: start", stage)
    started = time.time()
    if stage in DISTRIBUTED_STAGES or is_main_process():
        summary = STAGE_FUNCS[stage](run)
    else:
        summary = None  # a main-process-only stage: this process waits, then reads its summary
    # under `accelerate launch`: one marker, by the main process; the others wait for it
    if is_main_process():
        run.mark_complete(stage, summary, started)
    barrier()
    if summary is None:
        summary = run.marker(stage).get("summary")
    log.info("stage %s: done in %.1fs", stage, time.time() - started)
    console.print(f"[green]stage {stage}: done in {time.time() - started:.1f}s[/green]")
    return summary


def run_pipeline(run: Run) -> dict[str, dict | None]:
    """Run the config's stages in order, skipping completed ones."""
    if not progress_enabled():
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    with run_lock(run):  # held across the stages: no other process slips in between two of them
        return {stage: run_stage(run, stage) for stage in run.config.stages}


def read_metrics(run: Run) -> dict:
    return json.loads((run.require("evaluate") / "metrics.json").read_text("utf-8"))
