"""`mmboundary compare`: the paper's comparison table (method.md sections 6-7) on one data set,
over seeds, and a report rebuilt from saved results alone.

A comparison is described by a `CompareSpec` (YAML, e.g. `configs/compare/default.yaml`): the base
run config and overrides, which pipeline rows (methods and ablations, `mmboundary.ablations`) and
which baselines (`mmboundary.baselines`) to include, the seeds (`seeds` for every row,
`method_seeds` for the method and reference rows: a superset) and the splits.

`run_compare(spec, root_dir)`, for each seed (`spec.seeds`, then the further `method_seeds`, each
with only the rows that run on it):

1. creates (or reopens) the **full method's run** `runs/seed<s>/full` (the base config, `seed=<s>`,
   the `rl` stage added: `ablations.full_overrides`) and runs its missing stages;
2. for each ablation with its own run, **forks** the full run into `runs/seed<s>/<row>`
   (`stages.fork_run`: every finished stage the overlay leaves valid is hard-linked, so data and base
   are trained once per seed, the SFT model once for all RL ablations) and runs the rest; an
   existing fork is reopened and resumed (its config must be the row's);
3. reads each pipeline row from its run's `evaluate` stage (`evaluate/metrics.json` and the judged
   chains `evaluate/chains_<model>_<split>.jsonl`); the two reference rows (one constant level, a
   prior level per kind of step) are the vanilla model's judged chains at levels chosen on its
   train chains (`estimate/chains_train.jsonl`, `evaluation.references`);
4. runs the baselines on the seed's models (the full run's vanilla model, or its SFT model for
   Multisample), saving each raw `BaselineResult`; the `internal` readouts are computed from the
   estimate stage's saved chains and signals when they cover the split (no model is run);
5. runs the self-correction rows (`CorrectionSpec`: `mmboundary.correction` on the seed's vanilla,
   SFT or RL model), with the same model's greedy numbers from the evaluate stage beside them;
6. saves one `RowResult` JSON per row and seed (`results/<row>/seed<s>.json`).

A row that fails is saved as `status: failed` with the error (traceback in `compare.log`) and
the comparison goes on; it is retried by the next `run_compare`.

Several `run_compare` processes may share one root (e.g. one per GPU, `mmboundary compare -o
<root>` started twice): each row and seed is run by the process that holds its lock
(`locks/seed<s>-<row>.lock`); the others leave it to that process and go on with the next row, or
reuse its saved result when it has finished. The seed's full run is made once: a second process
waits for it (`locks/seed<s>-full-run.lock`). The report is written by each process at its end;
the last one to finish writes the complete one. Rows the config cannot express
(e.g. RL rows without the rl stage, `ablations.row_availability`) are saved as `unavailable` with the reason, and
baselines that do not apply to the model (DPV/DPS on the tiny model) as `not_applicable`.

`build_report(root_dir)` is pure: it reads only the saved JSON (`spec.json`, `results/`,
`last_run.json`) and computes per split and row the mean and sample standard deviation over seeds
of ECE, MECE, Acc, F1, AUROC, Brier and Brier's parts, each with its 95 % pooled bootstrap
interval over questions (`protocol.py`, from the per-question scores every result keeps), the
paired differences of every row with SFT only, the two references and the vanilla model
(verdicts "better" / "worse" only when the interval excludes 0 and every seed agrees in sign), the
paper's numbers beside the rows that match (`PAPER_TABLE`), and findings (which row has the lowest
mean MECE; RL against SFT only; the rows against the references; each ablation against the full
method, by the same rule). `write_report(report, out_dir)` writes `report.md`, `report.json`, a reliability
diagram per row and split (step level, seeds pooled; `evaluation.plots.reliability_diagram`) and
a level histogram per split.

Layout of `root_dir`:

    spec.json                    the spec of the last run_compare (rows, seeds, splits)
    last_run.json                when it ran and how long it took
    compare.log                  progress and the tracebacks of failed rows
    runs/seed<s>/full/           the full method's run (a `runs.Run`)
    runs/seed<s>/<row>/          the run of each ablation with its own run (a fork)
    baselines/<row>/seed<s>_<split>.json   raw BaselineResult of each baseline
    locks/seed<s>-<row>.lock     who runs (row, seed) now (flock; released when its process ends)
    results/<row>/seed<s>.json   RowResult: per split the ConfidenceReport, the (confidence,
                                 correctness) pairs behind it and the per-question scores
    report/                      report.md, report.json, reliability_<row>_<split>.png, levels_<split>.png

The modules of this package:

    spec.py                 CompareSpec, BaselineSpec, CorrectionSpec, load_spec
    results.py              RowResult, SplitResult (the saved results), save_result, load_result
    freshness.py            whether a saved result still holds: fingerprints, weight digests
                            (stage_digest), the saved results a seed reuses
    fingerprint_history.py  the config-history shims behind the fingerprints of older results
    runners.py              what runs on a seed's runs and models: pipeline rows read from the
                            evaluate stage, baselines, self-correction
    run.py                  run_compare: the seeds, their full runs, forks, locks and rows
    report_model.py         Report, SplitTable, ReportRow, Paired, Stat, COLUMNS, PAPER_TABLE
    protocol.py             the measurement protocol: intervals, paired differences, the verdict rule
    report.py               build_report (statistics over seeds), write_report
    findings.py             the findings' prose
    markdown.py             render_markdown
    figures.py              reliability diagrams and level histograms
    console.py              progress while running, the tables printed at the end
    main.py                 compare_main (`mmboundary compare`)
"""

from mmboundary.compare.freshness import MODEL_STAGES, stage_digest
from mmboundary.compare.main import compare_main
from mmboundary.compare.markdown import render_markdown
from mmboundary.compare.protocol import COMPARATORS, PAIRED_METRICS, verdict_word
from mmboundary.compare.report import build_report, write_report
from mmboundary.compare.report_model import (
    COLUMNS,
    PAPER_DATASETS,
    PAPER_TABLE,
    Paired,
    Report,
    ReportRow,
    SplitTable,
    Stat,
)
from mmboundary.compare.results import (
    READ_FORMATS,
    RESULT_FORMAT,
    RowResult,
    SplitResult,
    load_result,
    result_path,
    save_result,
)
from mmboundary.compare.run import run_compare
from mmboundary.compare.runners import BaselineRun, CorrectionOutcome, CorrectionRunner, pipeline_row_result
from mmboundary.compare.spec import BaselineSpec, CompareSpec, CorrectionSpec, load_spec

__all__ = [
    "COLUMNS",
    "COMPARATORS",
    "MODEL_STAGES",
    "PAIRED_METRICS",
    "PAPER_DATASETS",
    "PAPER_TABLE",
    "READ_FORMATS",
    "RESULT_FORMAT",
    "BaselineRun",
    "BaselineSpec",
    "CompareSpec",
    "CorrectionOutcome",
    "CorrectionRunner",
    "CorrectionSpec",
    "Paired",
    "Report",
    "ReportRow",
    "RowResult",
    "SplitResult",
    "SplitTable",
    "Stat",
    "build_report",
    "compare_main",
    "load_result",
    "load_spec",
    "pipeline_row_result",
    "render_markdown",
    "result_path",
    "run_compare",
    "save_result",
    "stage_digest",
    "verdict_word",
    "write_report",
]
