"""The report's findings: a few sentences per split on what the numbers say (which row has the
lowest mean MECE; the rows paired with the full method on the same seeds; RL against SFT only; the
rows against the references; how each ablation compares with the full method).

A finding calls a row better or worse than another ONLY by the rule of `compare.protocol` (the
paired difference's 95 % interval excludes 0 and every common seed agrees in sign); a ranking of
means is said to be one, and a pair without per-question scores (results of format /1) gets no
verdict."""

from __future__ import annotations

from collections.abc import Sequence

from mmboundary.compare.protocol import PAIRED_METRICS, pair
from mmboundary.compare.report_model import COLUMNS, PAPER_DATASETS, PAPER_TABLE, Paired, ReportRow, _fmt
from mmboundary.evaluation.bootstrap import LEVEL, N_RESAMPLES

_HEADERS = {c: h for c, h, _ in COLUMNS}


def _diff(p: Paired) -> str:
    """A paired difference in words: "+0.010 [-0.004, 0.023], 3 seeds: no measurable difference"."""
    if p.verdict is None:
        return f"not measured ({p.reason})"
    iv = f" [{p.low:+.3f}, {p.high:+.3f}]" if p.low is not None and p.high is not None else ""
    est = f"{p.estimate:+.3f}" if p.estimate is not None else "undefined"
    return f"{est}{iv}, {len(p.seeds)} seed{'s' if len(p.seeds) != 1 else ''}: {p.verdict}"


def _lowest_mece(rows: list[ReportRow], ok: dict[str, ReportRow]) -> str:
    ranked = sorted(ok.values(), key=lambda r: r.stats["mece"].mean)
    best, full = ranked[0], ok.get("full")
    note = " (a ranking of means; which gaps are measurable: the paired differences)"
    if full is None:
        fr = next((r for r in rows if r.row == "full"), None)
        why = ("it is not in this comparison" if fr is None else
               f"it has no MECE ({fr.status.replace('_', ' ')}{': ' + fr.reason if fr.reason else ''})"
               if fr.status != "ok" else
               f"it has no MECE (no step with a parsed statement and a known truth; parsed share "
               f"{_fmt(fr.parsed)})")
        return f"Lowest mean MECE: {best.label} ({best.stats['mece'].mean:.3f}); the full method: {why}{note}."
    if best.row == "full":
        runner_up = ranked[1] if len(ranked) > 1 else None
        more = f", next {runner_up.label} ({runner_up.stats['mece'].mean:.3f})" if runner_up else ""
        return (f"The full method has the lowest mean MECE of all {len(ranked)} rows with numbers "
                f"({full.stats['mece'].mean:.3f}{more}){note}.")
    fm = full.stats["mece"]
    lower = [r for r in ranked if r.stats["mece"].mean < fm.mean]
    spread = f" (seed std {fm.std:.3f})" if fm.std is not None else ""
    return (f"The full method does NOT have the lowest mean MECE here: its MECE is {fm.mean:.3f}{spread}, rank "
            f"{ranked.index(full) + 1} of {len(ranked)}; lower means: "
            + ", ".join(f"{r.label} ({r.stats['mece'].mean:.3f})" for r in lower) + f"{note}.")


def _by_seed_with_full(ok: dict[str, ReportRow]) -> str | None:
    paired = [r for r in ok.values() if r.mece_vs_full is not None and r.mece_vs_full.n > 1]
    if "full" not in ok or not paired:
        return None
    always = [r for r in paired if r.lower_than_full == r.mece_vs_full.n]
    never = [r for r in paired if r.lower_than_full == 0]

    def names(rs):
        return ", ".join(f"{r.label} ({r.mece_vs_full.mean:+.3f}, {r.mece_vs_full.n} seeds)" for r in rs) or "no row"

    return ("Paired with the full method on the same seeds (MECE, row minus full): lower on every common seed: "
            + names(always) + "; lower on no common seed: " + names(never)
            + "; the other rows change sign between seeds.")


def _against_references(paired: Sequence[Paired], ok: dict[str, ReportRow]) -> list[str]:
    """Per reference, the rows measurably better / worse on MECE, and how many are neither."""
    out = []
    for ref in ("constant_level", "kind_prior"):
        if ref not in ok:
            continue
        mine = [p for p in paired if p.against == ref and p.metric == "mece"]
        if not mine:
            continue
        by = {v: [p.label for p in mine if p.verdict == v] for v in ("better", "worse")}
        rest = [p for p in mine if p.verdict not in ("better", "worse")]
        out.append(f"Against {ok[ref].label} (MECE, paired): better: " + (", ".join(by["better"]) or "no row")
                   + "; worse: " + (", ".join(by["worse"]) or "no row")
                   + f"; {len(rest)} row(s) with no measurable difference or no per-question scores.")
    return out


def _findings(split: str, rows: list[ReportRow], paired: Sequence[Paired] = (), *, n_resamples: int = N_RESAMPLES,
              seed: int = 0, level: float = LEVEL) -> list[str]:
    """The findings of one split's table (`rows`: its rows, paired with the full method by seed;
    `paired`: its paired differences with the comparators, `protocol.paired_table`)."""
    ok = {r.row: r for r in rows if r.status == "ok" and r.stats.get("mece")}
    if not ok:
        return ["No row has numbers on this split."]
    out = [_lowest_mece(rows, ok)]
    by_seed = _by_seed_with_full(ok)
    if by_seed:
        out.append(by_seed)
    full, sft = ok.get("full"), ok.get("sft_only")
    if full is not None and sft is not None:
        p = next((x for x in paired if x.row == "full" and x.against == "sft_only" and x.metric == "mece"), None) \
            or pair(full, sft, "mece", "lower", n_resamples=n_resamples, seed=seed, level=level)
        paper, paper_sft = PAPER_TABLE["MMBoundary"], PAPER_TABLE["MMBoundary w/o RL (SFT only)"]
        paper_txt = "; ".join(f"{d} {paper[d][1]:.3f} vs {paper_sft[d][1]:.3f}" for d in PAPER_DATASETS.get(split, ()))
        out.append(f"RL vs SFT only (MECE {full.stats['mece'].mean:.3f} vs {sft.stats['mece'].mean:.3f}; "
                   f"paired, full minus SFT only: {_diff(p)})"
                   + (f" (paper, full vs SFT only: {paper_txt})." if paper_txt else "."))
    out += _against_references(paired, ok)
    if full is not None:
        out += _ablations(rows, ok, full, n_resamples=n_resamples, seed=seed, level=level)
    return out


def _ablations(rows: list[ReportRow], ok: dict[str, ReportRow], full: ReportRow, **protocol) -> list[str]:
    """Each ablation against the full method, paired on `PAIRED_METRICS`; the ablations without
    per-question scores in one sentence with their mean MECE (no verdict)."""
    out, unmeasured = [], []
    for r in rows:
        if r.kind != "ablation" or r.row not in ok:
            continue
        ps = [pair(r, full, name, d, **protocol) for name, d in PAIRED_METRICS]
        if all(p.verdict is None for p in ps):
            unmeasured.append((r, ps[0].reason))
            continue
        by = {v: [_HEADERS[p.metric] for p in ps if p.verdict == v] for v in ("better", "worse")}
        rest = [_HEADERS[p.metric] for p in ps if p.verdict not in ("better", "worse")]
        out.append(f"{r.label} vs the full method (paired): worse on " + (", ".join(by["worse"]) or "none")
                   + "; better on " + (", ".join(by["better"]) or "none")
                   + "; no measurable difference on " + (", ".join(rest) or "none") + ".")
    if unmeasured:
        reasons = sorted({why or "" for _, why in unmeasured})
        why = ("their results keep no per-question scores (format /1)" if all("format /1" in x for x in reasons)
               else "; ".join(reasons))
        out.append(f"Ablations vs the full method: no verdict for {len(unmeasured)} ablation(s) ({why}); mean MECE "
                   + ", ".join(f"{r.label} {r.stats['mece'].mean:.3f}" for r, _ in unmeasured)
                   + f", against the full method's {full.stats['mece'].mean:.3f}.")
    return out
