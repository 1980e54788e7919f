"""What a comparison runs on a seed's runs and models, row by row:

- a pipeline row's numbers, read from its run's evaluate stage (`pipeline_row_result`; no model
  is run: the stages themselves are run by `pipeline.run_pipeline`, `_default_pipeline`); the
  reference rows' levels from the vanilla model's train chains (`_reference_levels`);
- the baselines on the full run's models (`_RunBaselines`), each split as a `SplitResult`
  (`_baseline_split`);
- the self-correction rows on the full run's vanilla, SFT or RL model (`_RunCorrections`), with
  the same model's greedy numbers beside them (`_greedy_numbers`, `_correction_split`).

Every split keeps its per-question scores (`SplitResult.questions`, `evaluation.bootstrap`):
from the judged chains and their levels for level-based rows (`question_scores`), from the
baseline's per-example confidences for baselines (`baselines.question_scores_of`).

`run_compare` takes the runners as parameters (`BaselineRun`, `CorrectionRunner`) so that its
orchestration can be tested with stubs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

# `pipeline.run_pipeline`, `factory.load_vlm`, `model_clip.load_clip` and `baselines.run_baseline`
# are looked up on their modules when called, so that tests can replace them there
from mmboundary import baselines, pipeline
from mmboundary.ablations import Row, row_model
from mmboundary.artifacts import (
    chains_f1,
    load_split,
    make_statement_mapper,
    model_device,
    pick_model,
    read_chains,
    read_metrics,
    read_step_levels,
    reading_parts,
    resolve_vlm_path,
    reuse_estimate_chains,
)
from mmboundary.baselines import (
    BaselineInputs,
    BaselineResult,
    baseline_report,
    internal_confidences,
    question_scores_of,
    sc_equivalence,
)
from mmboundary.compare.results import SplitResult
from mmboundary.compare.spec import BaselineSpec, CorrectionSpec
from mmboundary.confidence.fusion import Levels, Normalizer, level_probability
from mmboundary.confidence.similarity import SentenceSimilarity
from mmboundary.correction import InternalScorer, SelfCorrector, VLMBackend
from mmboundary.distributed import make_accelerator
from mmboundary.errors import RunError
from mmboundary.evaluation.bootstrap import question_scores
from mmboundary.evaluation.expressed import chain_levels, confidence_report
from mmboundary.evaluation.references import (
    constant_chain_levels,
    constant_level,
    kind_prior_chain_levels,
    kind_table,
    train_steps,
)
from mmboundary.judging import judge_chains, make_step_judge, reusable_similarity
from mmboundary.models import clip as model_clip
from mmboundary.models import factory
from mmboundary.records import StepSignals


def _default_pipeline(run) -> None:
    pipeline.run_pipeline(run)


# --- pipeline rows: read from the evaluate stage ---------------------------------------------------

def _level_pairs(chains, levels) -> dict[str, list]:
    """(confidence, correctness) pairs of level-based confidence, as `confidence_report` counts
    them: steps with a level and a known truth; answers whose last step has a level."""
    sp, sy, ap, ay = [], [], [], []
    for chain, lv in zip(chains, levels):
        for step, level in zip(chain.steps, lv):
            if level is not None and step.correct is not None:
                sp.append(level_probability(int(level)))
                sy.append(int(step.correct))
        if lv and lv[-1] is not None:
            ap.append(level_probability(int(lv[-1])))
            ay.append(int(chain.answer_correct))
    return {"step_confidence": sp, "step_correct": sy, "answer_confidence": ap, "answer_correct": ay}


def _reference_levels(kind: str, train, chains) -> tuple[list[list[int]], dict[str, Any]]:
    """The levels of a reference row (`Row.levels`: "constant" or "kind_prior") for `chains`,
    chosen on the vanilla model's `train` chains by `evaluation.references` (the functions the
    evaluate stage uses), and what was chosen (saved in the split's `extra["reference"]`)."""
    kinds, truths = train_steps(train)
    if not truths:
        raise RunError("the vanilla model's train chains have no step with a known truth to choose a "
                       "reference level on")
    const = constant_level(truths)
    fitted: dict[str, Any] = {"levels": kind, "train_steps": len(truths), "train_accuracy": sum(truths) / len(truths),
                              "constant_level": const}
    if kind == "constant":
        return constant_chain_levels(chains, const), fitted
    table = kind_table(kinds, truths)
    fitted["kinds"] = [r.model_dump(mode="json") for r in table]
    return kind_prior_chain_levels(chains, {r.kind: r.level for r in table}, const), fitted


def _level_split(report, chains, levels, extra: dict[str, Any] | None = None) -> SplitResult:
    """A split of a level-based row: its report, the pairs behind it and each question's scores."""
    return SplitResult(report=report, **_level_pairs(chains, levels),
                       questions=[question_scores(c, lv) for c, lv in zip(chains, levels)], extra=extra or {})


def pipeline_row_result(run, row: Row, seed: int, splits: Sequence[str]) -> dict[str, SplitResult]:
    """The splits of a pipeline row from its run's evaluate stage (no model is run): the
    ConfidenceReport the evaluate stage wrote for the row's model, and its pairs and per-question
    scores from the judged chains (expressed levels; for the vanilla model, the estimate stage's
    internal levels). A reference row (`Row.levels` not "model") is the vanilla model's judged
    chains at the reference's levels, fitted on its train chains (`_reference_levels`), with the
    report computed from them as the evaluate stage computes it (`confidence_report`)."""
    ev = run.require("evaluate")
    metrics = read_metrics(run)
    model = row_model(row, run.config)
    out: dict[str, SplitResult] = {}
    train = read_chains(run.require("estimate") / "chains_train.jsonl") if row.levels != "model" else None
    for split in splits:
        m = metrics[split].models.get(model) if split in metrics else None
        if m is None:
            continue
        chains = read_chains(ev / f"chains_{model}_{split}.jsonl")
        if train is not None:
            levels, fitted = _reference_levels(row.levels, train, chains)
            out[split] = _level_split(confidence_report(chains, levels, f1=m.f1), chains, levels,
                                      {"reference": fitted})
            continue
        if model == "vanilla":
            if m.internal is None:
                raise RunError(f"{ev}: the evaluate stage scored no internal levels for the vanilla model on "
                               f"{split} (evaluate.limit differs from estimate.limit)")
            lv_map = read_step_levels(run.require("estimate") / f"steps_{split}.jsonl")
            levels = [[lv_map.get((c.example_id, i)) for i in range(len(c.steps))] for c in chains]
            report = m.internal
        else:
            levels = [chain_levels(c) for c in chains]
            report = m.expressed
            if report is None:
                raise RunError(f"{ev}/metrics.json: no expressed report of {model!r} on {split!r}")
        out[split] = _level_split(report, chains, levels)
    if not out:
        raise RunError(f"{ev}/metrics.json has no {model!r} row for the splits {list(splits)}")
    return out


# --- baselines on a seed's models ------------------------------------------------------------------

def _baseline_split(result, f1: float | None) -> SplitResult:
    """A baseline's split: its row's columns (fallbacks counted at their value, `baseline_report`),
    the pairs behind them and each question's scores (`question_scores_of`); for SC, the step
    equivalence its samples agreed by (`extra["equivalence"]`, from the result's config)."""
    rep = baseline_report(result, f1=f1)
    sp, sy, ap, ay = [], [], [], []
    for ex in result.examples:
        for step, p in zip(ex.chain.steps, ex.step_confidences):
            if step.correct is not None:
                sp.append(float(p))
                sy.append(int(step.correct))
        ap.append(float(ex.answer_confidence))
        ay.append(int(ex.chain.answer_correct))
    extra = {"answer_brier": rep.answer_brier, "fallback_steps": rep.fallback_steps,
             "fallback_answers": rep.fallback_answers, "cost_per_example": rep.cost_per_example,
             "parsed_only": rep.parsed_only.model_dump(mode="json") if rep.parsed_only else None}
    if result.method == "sc":
        extra["equivalence"] = result.config.get("equivalence")  # None: a result from before it was recorded
    return SplitResult(report=rep.confidence, step_confidence=sp, step_correct=sy, answer_confidence=ap,
                       answer_correct=ay, questions=question_scores_of(result), extra=extra)


BaselineRun = Callable[[BaselineSpec, str], tuple[Any, float | None, str | None]]


class _RunBaselines:
    """Baselines on one run's models: models, encoders and fitted inputs are loaded once, on
    first use. Called with (BaselineSpec, split), returns (BaselineResult, F1 of its chains, note)."""

    def __init__(self, run, seed: int):
        self.run = run
        self.cfg = run.config
        self.seed = seed
        self._models: dict[str, Any] = {}
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def matcher(self):
        ev = self.cfg.evaluate
        return self._get("matcher", lambda: SentenceSimilarity(ev.match_model, kind=ev.match_kind))

    def similarity(self):
        e, ev = self.cfg.estimate, self.cfg.evaluate
        if (e.similarity_model, e.similarity_kind) == (ev.match_model, ev.match_kind):
            return self.matcher()
        return self._get("similarity", lambda: SentenceSimilarity(e.similarity_model, kind=e.similarity_kind))

    def fitted(self):
        est = self.run.require("estimate")
        return self._get("fitted", lambda: (Normalizer.load(est / "normalizer.json"), Levels.load(est / "levels.json")))

    def model(self, name: str):
        if name not in self._models:
            path = resolve_vlm_path(self.run) if name == "vanilla" else self.run.require(name) / "model"
            vlm = factory.load_vlm(path, self.cfg.model)
            vlm.model.to(make_accelerator(self.cfg.device).device)
            self._models[name] = vlm
        return self._models[name]

    def _make_clip(self):
        clip = model_clip.load_clip(self.cfg.clip.path or self.run.require("base") / "clip")
        clip.model.to(make_accelerator(self.cfg.device).device)
        return clip

    def inputs(self, method: str, config, examples):
        kw: dict[str, Any] = {}
        if method == "internal":
            normalizer, levels = self.fitted()
            kw.update(normalizer=normalizer, levels=levels, fusion=self.cfg.estimate.fusion)
            fusion = self.cfg.estimate.fusion
            used = fusion.signals_in_use if config.source == "fused" else (config.source,)
            if "clip_score" in used:
                kw["clip"] = self._get("clip", self._make_clip)
            if "token_sar" in used:
                kw["similarity"] = self.similarity()
        if method == "multisample" or (method == "sc" and sc_equivalence(config, examples) == "encoder"):
            kw["similarity"] = self.similarity()
        if method in ("multisample", "dps"):
            shared = self.matcher() if self.cfg.statements.kind == "statement" and \
                self.cfg.evaluate.match_model is None and self.cfg.evaluate.match_kind == "bi-encoder" else None
            kw["mapper"] = self._get("mapper", lambda: make_statement_mapper(self.cfg, encoder=shared))
        kw["judge"] = self.judge()
        return BaselineInputs(**kw)

    def judge(self):
        """The run's step judge (`judging.make_step_judge`), sharing the matcher (loaded for F1 anyway)
        when it is the same model."""
        return self._get("judge", lambda: make_step_judge(self.cfg.judge,
                                                          reusable_similarity(self.cfg.judge, self.matcher())))

    def _saved_signals(self, split: str):
        """The estimate stage's chains and signals of `split` when they are the chains the
        evaluate stage judges (same examples), else None."""
        path = reuse_estimate_chains(self.run, split)
        steps = self.run.stage_dir("estimate") / f"steps_{split}.jsonl"
        if path is None or not steps.exists():
            return None
        fields = set(StepSignals.model_fields)
        signals = [StepSignals.model_validate({k: v for k, v in json.loads(line).items() if k in fields})
                   for line in steps.read_text("utf-8").splitlines() if line.strip()]
        return read_chains(path), signals

    def __call__(self, spec: BaselineSpec, split: str):
        examples = load_split(self.run, split, self.cfg.evaluate.limit)
        config = spec.resolved_config(self.cfg, self.seed)
        note = None
        saved = self._saved_signals(split) if spec.method == "internal" and \
            config.generation == self.cfg.generation else None
        if saved is not None:
            normalizer, levels = self.fitted()
            chains, signals = saved
            records = internal_confidences(chains, signals, config, normalizer, levels, self.cfg.estimate.fusion)
            result = BaselineResult(method="internal", variant=config.variant, config=config.model_dump(mode="json"),
                                    examples=tuple(records))
            note = "read out from the estimate stage's saved chains and signals (no model run; cost not counted)"
        else:
            result = baselines.run_baseline(spec.method, self.model(spec.model_name), examples, config,
                                            self.inputs(spec.method, config, examples))
        f1 = None
        if result.applicable and result.examples:
            f1 = chains_f1([e.chain for e in result.examples], examples, self.matcher(),
                           self.cfg.evaluate.match_threshold)
        return result, f1, note


# --- self-correction on a seed's models ----------------------------------------------------------

class CorrectionOutcome(BaseModel):
    """What a self-correction row computes on one split: the corrected chains' report, the pairs
    behind it, the F1 of the corrected chains, and the extra compute (`CorrectionRun.compute_summary`)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    chains: list[Any]
    levels: list[list[int | None]]
    compute: dict[str, Any]
    f1: float | None = None


CorrectionRunner = Callable[[CorrectionSpec, str], CorrectionOutcome]


class _CorrectionModel(NamedTuple):
    """A model of a run loaded for self-correction: the VLM, the run's scoring context (None: no
    internal levels) and the statement mapper (None: the model writes no statements)."""

    vlm: Any
    context: Any
    mapper: Any


class _RunCorrections:
    """Self-correction on one run's models, each loaded once as `api.load(run, stage=model)` loads
    it, from the same parts of `artifacts`: the checkpoint (`pick_model`), the device
    (`model_device`), the scoring context and statement mapper (`reading_parts`). Called with
    (CorrectionSpec, split)."""

    def __init__(self, run, seed: int):
        self.run = run
        self.seed = seed
        self._models: dict[str, _CorrectionModel] = {}
        self._matcher = None
        self._judge = None

    def _load(self, name: str) -> _CorrectionModel:
        cfg = self.run.config
        model = pick_model(self.run, name)
        context, mapper = reading_parts(self.run, model.expressed)
        vlm = factory.load_vlm(model.path, cfg.model)
        vlm.model.to(model_device(cfg.device))
        return _CorrectionModel(vlm=vlm, context=context, mapper=mapper)

    def __call__(self, spec: CorrectionSpec, split: str) -> CorrectionOutcome:
        cfg = self.run.config
        if spec.model not in self._models:
            self._models[spec.model] = self._load(spec.model)
        model = self._models[spec.model]
        if spec.model == "vanilla" and model.context is None:
            raise RunError(f"{self.run.root}: no internal levels for the vanilla model (estimate stage incomplete)")
        examples = load_split(self.run, split, cfg.evaluate.limit)
        scorer = InternalScorer(model.vlm, model.context) if model.context is not None else None
        corrector = SelfCorrector(VLMBackend(model.vlm, batch_size=cfg.generation.batch_size), scorer, model.mapper,
                                  spec.resolved_config(self.seed), max_new_tokens=cfg.generation.max_new_tokens)
        crun = corrector.run(examples, description=f"{spec.row_name} {split}")
        levels = crun.internal_levels if spec.model == "vanilla" else crun.expressed_levels
        if self._matcher is None:
            self._matcher = SentenceSimilarity(cfg.evaluate.match_model, kind=cfg.evaluate.match_kind)
        if self._judge is None:
            self._judge = make_step_judge(cfg.judge, reusable_similarity(cfg.judge, self._matcher))
        chains = judge_chains(crun.chains, examples, self._judge)
        f1 = chains_f1(chains, examples, self._matcher, cfg.evaluate.match_threshold)
        return CorrectionOutcome(chains=chains, levels=levels, compute=crun.compute_summary(), f1=f1)


def _greedy_numbers(run, model: str, split: str) -> dict[str, float | None]:
    """The model's own numbers on `split` without self-correction: its greedy chains as the
    evaluate stage judged them (internal levels for the vanilla model, expressed otherwise)."""
    ev = run.require("evaluate")
    metrics = read_metrics(run)
    m = metrics[split].models.get(model) if split in metrics else None
    if m is None:
        raise RunError(f"{ev}/metrics.json has no {model!r} model on {split!r}")
    rep = m.internal if model == "vanilla" else m.expressed
    if rep is None:
        raise RunError(f"{ev}/metrics.json: no {'internal' if model == 'vanilla' else 'expressed'} report "
                       f"of {model!r} on {split!r}")
    return {"accuracy": rep.accuracy, "mece": rep.mece, "ece": rep.ece, "auroc": rep.auroc}


def _correction_split(outcome: CorrectionOutcome, without: dict[str, float | None]) -> SplitResult:
    """A self-correction row's split: the corrected chains' report and pairs, with the model's
    numbers without it and the change in accuracy (`extra`)."""
    report = confidence_report(outcome.chains, outcome.levels, f1=outcome.f1)
    gain = None if without.get("accuracy") is None else report.accuracy - without["accuracy"]
    extra = {"without": without, "accuracy_gain": gain, "compute": outcome.compute}
    return _level_split(report, outcome.chains, outcome.levels, extra)
