"""The results browser's data: a run's `evaluate/` output read back for the inspector.

What `stages.evaluate.stage_evaluate` writes and this module reads:
- `evaluate/metrics.json`: per split, per model, the accuracy summary and an `expressed` (trained
  models) or `internal` (the vanilla model) `ConfidenceReport`;
- `evaluate/chains_<model>_<split>.jsonl`: the model's chains (`records.GeneratedChain`), each
  step with its truth and, for a model that writes statements, its expressed level;
- `estimate/steps_<split>.jsonl`: the vanilla model's internal level per step (the confidence
  `evaluate` scores the vanilla chains with);
- `estimate/reliability_fused_<split>.png`: the fused internal confidence's reliability diagram;
- `data/<split>.jsonl`: the questions and images (shown beside the chains when present).

Per example the browser shows its **calibration error**: the mean over its steps with a level
and a known truth of |p(L) - correct|, p(L) = (L - 0.5) / 5 (`confidence.fusion.
level_probability`, the mapping `evaluate` uses), correct in {0, 1}. **[choice]** Examples are
sorted by it, largest first; examples without a scorable step (error None) come last; ties by
example id. The level a step is shown with is its expressed level for a model that writes
statements, its internal level for the vanilla model ("source" `expressed` / `internal`, read
from `metrics.json`; without it, `vanilla` is internal and every other model expressed).
The level filter keeps the examples with at least one step at that level.

Step-level reliability diagrams per model and split are drawn from the chains on first request
(`evaluation.plots.reliability_diagram`) and kept in memory for the server's life (one PNG per
model and split: a bounded cache). The JSON and JSONL files are re-read when their modification
time changes.
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Any

from mmboundary.artifacts import read_chains, read_step_levels
from mmboundary.confidence.fusion import level_probability
from mmboundary.data.jsonl import read_examples
from mmboundary.errors import MMBoundaryError, RunError
from mmboundary.evaluation.plots import reliability_diagram

SPLITS = ("train", "test", "ood")


def _p(level: int) -> float:
    return level_probability(level)


def example_error(levels: list[int | None], correct: list[bool | None]) -> float | None:
    """Mean |p(L) - correct| over the steps with a level and a known truth (None: no such step)."""
    pairs = [(lv, c) for lv, c in zip(levels, correct) if lv is not None and c is not None]
    if not pairs:
        return None
    return sum(abs(_p(lv) - float(c)) for lv, c in pairs) / len(pairs)


class Results:
    """A run's evaluation results, read lazily from `run_root` (see the module docstring)."""

    def __init__(self, run_root: str | Path):
        self.root = Path(run_root)
        self.evaluate = self.root / "evaluate"
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[float, Any]] = {}
        self._figures: dict[str, bytes] = {}

    # -- files -------------------------------------------------------------------------------------

    def _cached(self, path: Path, parse):
        """`parse(path)`, re-read when the file's modification time changes."""
        mtime = path.stat().st_mtime
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == mtime:
                return hit[1]
        value = parse(path)
        with self._lock:
            self._cache[path] = (mtime, value)
        return value

    def complete(self) -> bool:
        return (self.evaluate / "COMPLETE").is_file()

    def metrics(self) -> dict:
        path = self.evaluate / "metrics.json"
        if not path.is_file():
            return {}
        try:
            data = self._cached(path, lambda p: json.loads(p.read_text("utf-8")))
        except (OSError, ValueError) as e:
            raise RunError(f"{path}: unreadable metrics ({e})") from None
        if not isinstance(data, dict):
            raise RunError(f"{path}: not a JSON object of splits")
        return data

    def chain_files(self) -> dict[tuple[str, str], Path]:
        """(model, split) -> the chains file, for every `chains_<model>_<split>.jsonl`."""
        out = {}
        if not self.evaluate.is_dir():
            return out
        for path in sorted(self.evaluate.glob("chains_*_*.jsonl")):
            model, _, split = path.stem[len("chains_"):].rpartition("_")
            if model and split:
                out[(model, split)] = path
        return out

    def source(self, model: str, split: str) -> str:
        """'expressed' or 'internal': which confidence `evaluate` scored this model's steps with."""
        row = self.metrics().get(split, {}).get(model)
        if isinstance(row, dict):
            if "expressed" in row:
                return "expressed"
            if "internal" in row:
                return "internal"
        return "internal" if model == "vanilla" else "expressed"

    def _chains(self, path: Path):
        try:
            return self._cached(path, read_chains)
        except (OSError, ValueError) as e:
            raise RunError(f"{path}: unreadable chains ({e})") from None

    def _internal_levels(self, split: str) -> dict[tuple[str, int], int]:
        path = self.root / "estimate" / f"steps_{split}.jsonl"
        return self._cached(path, read_step_levels) if path.is_file() else {}

    def _examples(self, split: str) -> dict[str, Any]:
        """example id -> Example of the run's data split ({} when the file is missing or unreadable)."""
        path = self.root / "data" / f"{split}.jsonl"
        if not path.is_file():
            return {}
        try:
            return self._cached(path, lambda p: {ex.id: ex for ex in read_examples(p, check_images=False)})
        except MMBoundaryError:
            return {}

    # -- what the browser shows --------------------------------------------------------------------

    def table(self) -> list[dict]:
        """The metrics table: one row per split and model with the paper's columns."""
        rows = []
        for split, models in self.metrics().items():
            if not isinstance(models, dict):
                continue
            for model, m in models.items():
                if not isinstance(m, dict) or "answer_accuracy" not in m:
                    continue
                source = "expressed" if "expressed" in m else ("internal" if "internal" in m else None)
                c = m.get(source) or {}
                rows.append({"split": split, "model": model, "source": source,
                             "accuracy": c.get("accuracy", m.get("answer_accuracy")),
                             "ece": c.get("ece"), "mece": c.get("mece"), "f1": m.get("f1", c.get("f1")),
                             "auroc": c.get("auroc"), "brier": c.get("brier"), "parsed": c.get("parsed_share"),
                             "level_shares": c.get("level_shares") or {}})
        return rows

    def step_levels(self, model: str, split: str, chain) -> list[int | None]:
        """The level each step of `chain` is shown with (expressed, or internal for vanilla)."""
        if self.source(model, split) == "internal":
            internal = self._internal_levels(split)
            return [internal.get((chain.example_id, i)) for i in range(len(chain.steps))]
        return [s.level for s in chain.steps]

    def examples(self, split: str, model: str, level: int | None = None, limit: int = 50,
                 offset: int = 0) -> dict:
        """The examples of one model on one split, sorted by calibration error (largest first),
        optionally only those with a step at `level`; a page of `limit` from `offset`."""
        files = self.chain_files()
        if (model, split) not in files:
            raise KeyError(f"no results for model {model!r} on split {split!r}")
        data = self._examples(split)
        rows = []
        for chain in self._chains(files[(model, split)]):
            levels = self.step_levels(model, split, chain)
            if level is not None and level not in levels:
                continue
            truth = [s.correct for s in chain.steps]
            ex = data.get(chain.example_id)
            rows.append({
                "example_id": chain.example_id,
                "question": ex.question if ex is not None else None,
                "choices": list(ex.choices) if ex is not None and ex.choices else None,
                "reference": list(ex.answers) if ex is not None else None,
                "has_image": ex is not None,
                "answer": chain.answer, "answer_correct": chain.answer_correct,
                "error": example_error(levels, truth),
                "steps": [{"index": i, "text": s.text, "statement": s.statement, "level": lv, "correct": s.correct,
                           # the reference step a step judge matched it to, and the matching degree (else None)
                           "matched": ex.chain[s.reference].text if ex is not None and s.reference is not None
                           and s.reference < len(ex.chain) else None, "match_degree": s.match_degree}
                          for i, (s, lv) in enumerate(zip(chain.steps, levels))],
            })
        rows.sort(key=lambda r: (r["error"] is None, -(r["error"] or 0.0), r["example_id"]))
        return {"split": split, "model": model, "source": self.source(model, split), "level": level,
                "total": len(rows), "offset": offset, "examples": rows[offset:offset + limit]}

    def image_path(self, split: str, example_id: str) -> Path | None:
        """The image file of a known example of the run's data (None: unknown example or file)."""
        ex = self._examples(split).get(example_id)
        if ex is None:
            return None
        path = Path(ex.image)
        return path if path.is_file() else None

    # -- figures -----------------------------------------------------------------------------------

    def figures(self) -> list[dict]:
        """The reliability diagrams: one per model and split drawn from the chains (step level),
        and the estimate stage's fused internal confidence per split."""
        out = []
        for (model, split) in self.chain_files():
            out.append({"name": f"reliability_{model}_{split}.png", "model": model, "split": split,
                        "title": f"{model}, {self.source(model, split)} confidence, {split} steps"})
        for split in SPLITS:
            if (self.root / "estimate" / f"reliability_fused_{split}.png").is_file():
                out.append({"name": f"reliability_fused_{split}.png", "model": "vanilla", "split": split,
                            "title": f"fused internal confidence (estimate), {split} steps"})
        return out

    def figure(self, name: str) -> bytes | None:
        """The PNG bytes of a figure `figures()` lists (None: no such figure, or no scorable step)."""
        known = {f["name"]: f for f in self.figures()}
        if name not in known:
            return None
        f = known[name]
        if name.startswith("reliability_fused_"):
            return (self.root / "estimate" / name).read_bytes()
        with self._lock:
            if name in self._figures:
                return self._figures[name]
        conf, truth = [], []
        for chain in self._chains(self.chain_files()[(f["model"], f["split"])]):
            for lv, s in zip(self.step_levels(f["model"], f["split"], chain), chain.steps):
                if lv is not None and s.correct is not None:
                    conf.append(_p(lv))
                    truth.append(int(s.correct))
        if not conf:
            return None
        with tempfile.TemporaryDirectory(prefix="mmboundary-fig-") as tmp:
            png = reliability_diagram(conf, truth, Path(tmp) / name, title=f["title"]).read_bytes()
        with self._lock:
            self._figures[name] = png
        return png
