"""The comparison's measurement protocol (`mmboundary.compare.protocol`, docs/compare.md): a report
built from hand-made per-question scores shows each cell with its pooled bootstrap interval, the
reference rows, the Brier parts, and paired differences whose verdict follows the rule (better /
worse only when the interval excludes 0 AND every seed agrees in sign); results of format /1
still load and are shown without intervals; the verdict words by the metric's direction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from mmboundary.compare import (
    RESULT_FORMAT,
    CompareSpec,
    RowResult,
    SplitResult,
    build_report,
    load_result,
    render_markdown,
    save_result,
    verdict_word,
    write_report,
)
from mmboundary.evaluation.bootstrap import QuestionScores, metric
from mmboundary.evaluation.expressed import ConfidenceReport

REPO = Path(__file__).resolve().parents[1]
N = 200  # questions per split: enough for intervals that separate the rows below
SEEDS = (0, 1, 2)


def _truth(i: int) -> bool:
    """The same truth for every row (they answer the same questions): half right."""
    return i % 2 == 0


def _questions(conf) -> list[QuestionScores]:
    """Two steps per question, both of the question's truth; step and answer confidence
    `conf(truth)`."""
    out = []
    for i in range(N):
        y = _truth(i)
        c = conf(y)
        out.append(QuestionScores(id=f"q{i}", answer_correct=y, answer_confidence=c, step_confidence=(c, c),
                                  step_correct=(y, y), step_kind=("count", "final")))
    return out


def _report(qs: list[QuestionScores]) -> ConfidenceReport:
    """The ConfidenceReport columns of the scores (as the evaluate stage would write them)."""
    m = {name: metric(name, qs) for name in ("accuracy", "ece", "mece", "auroc", "brier", "step_accuracy")}
    steps = sum(len(q.step_confidence) for q in qs)
    return ConfidenceReport(examples=len(qs), accuracy=m["accuracy"], steps=steps, parsed_share=1.0,
                            steps_scored=steps, step_accuracy=m["step_accuracy"], ece=m["ece"], mece=m["mece"],
                            auroc=m["auroc"], answer_auroc=None, brier=m["brier"], answers_with_confidence=len(qs),
                            level_shares={}, f1=0.8)


def _save(root: Path, row: str, label: str, kind: str, seed: int, conf, seconds: float = 2.0) -> None:
    qs = _questions(conf)
    save_result(root, RowResult(row=row, label=label, kind=kind, seed=seed, status="ok", seconds=seconds,
                                splits={"test": SplitResult(report=_report(qs), questions=qs)}))


#: Each row's confidence on (seed, truth). Against SFT only (0.9 everywhere, overconfident), the
#: full method (0.9 when right, 0.1 when wrong) is clearly better in MECE and Brier, with the same
#: accuracy; `expected` is the constant reference itself; SaySelf beats the vanilla model's 0.7
#: on seeds 0 and 1 (0.5: MECE 0 against 0.2) and loses on seed 2 (0.75: MECE 0.25).
ROWS = {
    "vanilla": ("Vanilla (internal levels)", "reference", lambda s, y: 0.7),
    "constant_level": ("Reference: one constant level", "reference", lambda s, y: 0.5),
    "kind_prior": ("Reference: per-kind prior level", "reference", lambda s, y: 0.5),
    "sayself": ("SaySelf (answer-level statement)", "method", lambda s, y: 0.75 if s == 2 else 0.5),
    "expected": ("SFT + expected-reward RL", "method", lambda s, y: 0.5),
    "sft_only": ("MMBoundary w/o RL (SFT only)", "method", lambda s, y: 0.9),
    "full": ("MMBoundary (full)", "method", lambda s, y: 0.9 if y else 0.1),
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    spec = CompareSpec(methods=["vanilla", "sayself", "expected", "sft_only", "full"], ablations=["wo_r_ka"],
                       baselines=[], corrections=[], seeds=list(SEEDS), splits=["test"])
    (root / "spec.json").write_text(spec.model_dump_json())
    for name, (label, kind, conf) in ROWS.items():
        for s in SEEDS:
            _save(root, name, label, kind, s, lambda y, s=s, conf=conf: conf(s, y))
    # an ablation whose seed 2 was saved in format /1 (no per-question scores)
    for s in (0, 1):
        _save(root, "wo_r_ka", "w/o R_KA", "ablation", s, lambda y: 0.7)
    old = load_result(REPO / "docs" / "results" / "compare-default" / "results" / "wo_r_ka" / "seed2.json")
    assert old.format == "mmboundary.compare.row/1" and not old.has_questions("test")
    save_result(root, old.model_copy(update={"splits": {"test": old.splits["test"]}}))
    rep = build_report(root, n_resamples=400)
    paths = write_report(rep, root / "report")
    return rep, (root / "report" / "report.md").read_text(), paths, root


def _rows(rep):
    return {r.row: r for r in rep.tables[0].rows}


def _paired(rep, row, against, name):
    return next(p for p in rep.tables[0].paired if p.row == row and p.against == against and p.metric == name)


def test_cells_have_pooled_intervals_and_the_brier_parts(report):
    rep, md, _, _ = report
    rows = _rows(rep)
    assert list(rows)[:3] == ["vanilla", "constant_level", "kind_prior"]  # the references first
    full = rows["full"]
    # 0.9 on right steps, 0.1 on wrong ones: MECE 0.1 on every resample; Brier 0.01 = rel - res + unc
    assert full.stats["mece"].mean == pytest.approx(0.1)
    assert (full.intervals["mece"].low, full.intervals["mece"].high) == pytest.approx((0.1, 0.1))
    assert full.stats["brier_reliability"].mean == pytest.approx(0.01)
    assert full.stats["brier_resolution"].mean == pytest.approx(0.25)
    assert full.stats["brier_uncertainty"].mean == pytest.approx(0.25)
    assert full.stats["brier"].mean == pytest.approx(0.01 - 0.25 + 0.25)
    # a constant 0.7 against half right: MECE |acc - 0.7| moves with the resampled accuracy
    van = rows["vanilla"].intervals["mece"]
    assert van.low < 0.2 < van.high and van.high - van.low > 0.02
    assert "f1" not in rows["vanilla"].intervals  # the scores hold no step matching
    line = next(x for x in md.split("## test")[1].splitlines() if x.startswith("| MMBoundary (full) |"))
    assert "0.100 [0.100, 0.100] ± 0.000" in line
    assert f"[{van.low:.3f}, {van.high:.3f}]" in md
    for label in ("Reference: one constant level", "Reference: per-kind prior level"):
        assert f"| {label} |" in md
    assert "| Brier rel. | Brier res. | Brier unc. |" in md


def test_a_seed_without_scores_gives_the_row_no_interval(report):
    rep, md, _, _ = report
    wo = _rows(rep)["wo_r_ka"]
    assert wo.without_questions == [2] and wo.intervals == {} and wo.stats["mece"].n == 3
    assert wo.stats.get("brier_reliability") is None  # the parts need every seed's scores
    assert "| w/o R_KA † |" in md and "| MMBoundary (full) |" in md
    # its paired differences use the seeds that have scores
    assert _paired(rep, "wo_r_ka", "vanilla", "mece").seeds == [0, 1]


def test_paired_verdicts_follow_the_rule(report):
    rep, md, _, _ = report
    # clearly better: lower MECE and Brier on every seed, interval below 0
    p = _paired(rep, "full", "sft_only", "mece")
    assert p.verdict == "better" and p.high < 0 and p.per_seed == pytest.approx([-0.3] * 3)
    assert _paired(rep, "full", "sft_only", "brier").verdict == "better"
    assert _paired(rep, "sft_only", "constant_level", "mece").verdict == "worse"
    # the same answers: no measurable difference in accuracy (a zero difference)
    acc = _paired(rep, "full", "sft_only", "accuracy")
    assert acc.verdict == "no measurable difference" and acc.estimate == pytest.approx(0.0)
    # identical rows: no measurable difference
    same = _paired(rep, "expected", "constant_level", "mece")
    assert same.verdict == "no measurable difference" and same.per_seed == [0.0, 0.0, 0.0]
    # seeds of opposite signs: no measurable difference although the interval excludes 0
    mixed = _paired(rep, "sayself", "vanilla", "mece")
    assert mixed.per_seed[0] < 0 and mixed.per_seed[1] < 0 and mixed.per_seed[2] > 0
    assert mixed.high < 0 and mixed.verdict == "no measurable difference"
    # the references are comparators, not subjects; a row is not paired with itself
    assert not any(p.row in ("constant_level", "kind_prior") for p in rep.tables[0].paired)
    assert not any(p.row == p.against for p in rep.tables[0].paired)
    assert {p.against for p in rep.tables[0].paired} == {"sft_only", "constant_level", "kind_prior", "vanilla"}
    # the Markdown: one line per (row, comparator), signs per seed, the verdict in words
    section = md.split("Paired differences (row minus comparator")[1]
    line = next(x for x in section.splitlines() if x.startswith("| MMBoundary (full) | MMBoundary w/o RL"))
    p = _paired(rep, "full", "sft_only", "mece")
    assert f"-0.300 [{p.low:+.3f}, {p.high:+.3f}] (− − −) **better**" in line
    line = next(x for x in section.splitlines()
                if x.startswith("| SaySelf (answer-level statement) | Vanilla (internal levels)"))
    assert "(− − +) no measurable difference" in line


def test_findings_call_rows_better_only_by_the_rule(report):
    rep, md, _, _ = report
    findings = rep.tables[0].findings
    rl = next(f for f in findings if f.startswith("RL vs SFT only"))
    assert "-0.300" in rl and rl.count("better") == 1
    ref = next(f for f in findings if f.startswith("Against Reference: one constant level"))
    assert "better: no row; worse: Vanilla (internal levels), MMBoundary w/o RL (SFT only), w/o R_KA, " \
        "MMBoundary (full); 2 row(s) with no measurable difference" in ref
    # the ablation with a seed of format /1 is still paired on the two seeds with scores
    wo = next(f for f in findings if f.startswith("w/o R_KA vs the full method"))
    assert "worse on MECE, ECE, Brier; better on none; no measurable difference on Acc" in wo
    assert "lowest mean MECE" in findings[0] and "a ranking of means" in findings[0]


def test_the_report_json_and_markdown_are_pure(report):
    rep, md, paths, root = report
    saved = json.loads((root / "report" / "report.json").read_text())
    table = saved["tables"][0]
    full = next(r for r in table["rows"] if r["row"] == "full")
    assert full["intervals"]["mece"]["low"] == pytest.approx(0.1) and "questions" not in full
    assert any(p["verdict"] == "better" for p in table["paired"])
    assert saved["protocol"] == {"unit": "question", "n_resamples": 400, "level": 0.95, "seed": 0}
    old = load_result(root / "results" / "wo_r_ka" / "seed2.json").seconds
    assert rep.total_seconds == pytest.approx(2.0 * (3 * len(ROWS) + 2) + old)
    assert render_markdown(build_report(root, n_resamples=400), saved["figures"]) == md
    assert "Total over every row and seed" in md and "| seeds |" in md


def test_verdict_words_by_direction():
    assert verdict_word("lower", "lower") == "better" and verdict_word("higher", "lower") == "worse"
    assert verdict_word("higher", "higher") == "better" and verdict_word("lower", "higher") == "worse"
    assert verdict_word("no measurable difference", "lower") == "no measurable difference"


def test_results_of_format_1_load_and_format_2_keeps_every_question():
    for path in sorted((REPO / "docs" / "results" / "compare-default" / "results").glob("*/seed0.json")):
        r = load_result(path)
        assert r.format == "mmboundary.compare.row/1"
        assert all(not r.has_questions(s) for s in r.splits)
    qs = _questions(lambda y: 0.5)
    ok = RowResult(row="x", label="x", kind="method", seed=0, status="ok",
                   splits={"test": SplitResult(report=_report(qs), questions=qs)})
    assert ok.format == RESULT_FORMAT == "mmboundary.compare.row/2" and ok.has_questions("test")
    with pytest.raises(ValidationError, match="keeps the scores of every question"):
        RowResult(row="x", label="x", kind="method", seed=0, status="ok",
                  splits={"test": SplitResult(report=_report(qs))})
    with pytest.raises(ValidationError, match="scored twice"):
        SplitResult(report=_report(qs), questions=qs + qs[:1])


def test_the_console_summary_shows_intervals_and_verdicts(report, capsys, monkeypatch):
    from mmboundary.compare.console import _print_summary

    monkeypatch.setenv("COLUMNS", "400")  # wide enough that no cell wraps
    rep, _, _, _ = report
    _print_summary(rep)
    out = capsys.readouterr().out
    assert "0.100 [0.100, 0.100] ± 0.000" in out and "MECE paired differences" in out
    assert "better" in out and "no measurable difference" in out and "w/o R_KA †" in out


def test_the_references_are_in_every_default_spec_and_listed_apart(tmp_path):
    from mmboundary.compare import load_spec
    from mmboundary.errors import ConfigError

    for name in ("default", "preview"):
        spec = load_spec(REPO / "configs" / "compare" / f"{name}.yaml")
        assert spec.references == ["constant_level", "kind_prior"]
        assert spec.row_names()[:3] == ["vanilla", "constant_level", "kind_prior"]
    assert CompareSpec().references == ["constant_level", "kind_prior"]
    assert CompareSpec(methods=["full"]).row_names()[:2] == ["constant_level", "kind_prior"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [vanilla, constant_level]\n")
    with pytest.raises(ConfigError, match="list it under references"):
        load_spec(bad)
    bad.write_text("references: [full]\n")
    with pytest.raises(ConfigError, match="list it under methods or ablations"):
        load_spec(bad)
    assert CompareSpec(references=[]).row_names()[0] == "vanilla"


def test_paired_differences_use_the_seeds_both_rows_have(tmp_path):
    """Method rows on 5 seeds (`method_seeds`), an ablation on 3: the ablation is paired with SFT
    only over seeds 0-2, the full method over all 5 (its seeds 3-4 reverse the sign: no verdict);
    a result of a seed the ablation does not run on (an earlier spec's) is left out."""
    spec = CompareSpec(methods=["sft_only", "full"], ablations=["wo_r_ka"], references=[], baselines=[],
                       corrections=[], seeds=[0, 1, 2], method_seeds=[0, 1, 2, 3, 4], splits=["test"])
    root = tmp_path / "cmp"
    root.mkdir()
    (root / "spec.json").write_text(spec.model_dump_json())
    for s in range(5):
        _save(root, "sft_only", "MMBoundary w/o RL (SFT only)", "method", s, lambda y, s=s: 0.9 if s < 3 else 0.5)
        _save(root, "full", "MMBoundary (full)", "method", s, lambda y: 0.9 if y else 0.1)
    for s in range(4):  # seed 3: not one of the ablation's seeds
        _save(root, "wo_r_ka", "w/o R_KA", "ablation", s, lambda y, s=s: 0.7 if s < 3 else 0.1)
    rep = build_report(root, n_resamples=200)
    rows = _rows(rep)
    assert rows["wo_r_ka"].seeds == rows["wo_r_ka"].spec_seeds == [0, 1, 2]
    assert rows["full"].spec_seeds == [0, 1, 2, 3, 4] and rows["wo_r_ka"].stats["mece"].mean == pytest.approx(0.2)
    wo = _paired(rep, "wo_r_ka", "sft_only", "mece")
    assert wo.seeds == [0, 1, 2] and wo.per_seed == pytest.approx([-0.2] * 3) and wo.verdict == "better"
    full = _paired(rep, "full", "sft_only", "mece")
    assert full.seeds == [0, 1, 2, 3, 4] and full.per_seed == pytest.approx([-0.3] * 3 + [0.1] * 2)
    assert full.verdict == "no measurable difference"
    assert _paired(rep, "wo_r_ka", "sft_only", "accuracy").seeds == [0, 1, 2]
    finding = next(f for f in rep.tables[0].findings if f.startswith("RL vs SFT only"))
    assert "5 seeds" in finding
    md = render_markdown(rep)
    section = md.split("Paired differences (row minus comparator")[1]
    assert next(x for x in section.splitlines() if x.startswith("| w/o R_KA |")).split(" | ")[2] == "3"
    assert next(x for x in section.splitlines() if x.startswith("| MMBoundary (full) |")).split(" | ")[2] == "5"
