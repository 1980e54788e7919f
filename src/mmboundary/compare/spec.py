"""The comparison spec: what `run_compare` runs. `CompareSpec` (the base run config and its
overrides, the pipeline rows, baselines and self-correction rows, the seeds (every row's, and the
method and reference rows' further ones) and the splits; YAML,
e.g. `configs/compare/default.yaml`, read by `load_spec`), with `BaselineSpec` and
`CorrectionSpec` for one baseline or self-correction row."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mmboundary.ablations import REFERENCES, ROWS, Row, resolve_row
from mmboundary.baselines import make_config
from mmboundary.correction import CorrectionConfig
from mmboundary.errors import ConfigError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
#: **[choice]** The built-in default's `method_seeds` (issue 21: the method rows on at least 5
#: end-to-end seeds, the ablations and baselines on at least 3, the default's `seeds`).
DEFAULT_METHOD_SEEDS = (0, 1, 2, 3, 4)
_SIGNAL_LABELS = {"lnlp": "U_LNLP", "mte": "U_MTE", "token_sar": "U_TokenSAR", "clip_score": "U_CLIPScore"}


class BaselineSpec(BaseModel):
    """One baseline row: a method of `mmboundary.baselines`, its config (a mapping checked by
    `baselines.make_config`), and the seed's model it runs on (None: the SFT model for
    `multisample`, whose statements it aggregates, the vanilla model otherwise).

    Unless the config says otherwise, `internal`, `sc` and `multisample` generate under the run's
    `generation` config (the evaluate stage's chains), and `sc` / `multisample` sample with the
    comparison seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["internal", "sc", "multisample", "dpv", "dps"]
    name: str | None = Field(None, description="Row name (default: from the method and its config).")
    label: str | None = Field(None, description="Row label in the report (default: from the method).")
    model: Literal["vanilla", "sft"] | None = None
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid(self) -> "BaselineSpec":
        make_config(self.method, self.config)  # ConfigError (a ValueError for pydantic) naming the key
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"baseline name {self.name!r}: lower-case letters, digits, '_', '-', '.' only")
        return self

    @property
    def model_name(self) -> str:
        return self.model or ("sft" if self.method == "multisample" else "vanilla")

    @property
    def row_name(self) -> str:
        if self.name:
            return self.name
        base = self.method
        if self.method == "internal":
            c = make_config("internal", self.config)
            base = "internal-fused-continuous" if c.source == "fused" and c.readout == "continuous" \
                else f"internal-{c.variant}"
        default_model = "sft" if self.method == "multisample" else "vanilla"
        return base if self.model_name == default_model else f"{base}-{self.model_name}"

    @property
    def row_label(self) -> str:
        if self.label:
            return self.label
        if self.method == "internal":
            c = make_config("internal", self.config)
            text = ("Internal: fused levels (no training)" if c.readout == "level" else
                    "Internal: fused, continuous" if c.source == "fused" else
                    f"Internal: {_SIGNAL_LABELS[c.source]} alone")
        else:
            text = {"sc": "SC (self-consistency)", "multisample": "Multisample", "dpv": "DPV",
                    "dps": "DPS"}[self.method]
        return f"{text}, {self.model_name} model" if self.method in ("sc", "multisample", "dpv", "dps") else text

    def resolved_config(self, run_config, seed: int):
        """The method's checked config for a run (`run_config`: its RunConfig) and seed."""
        data = dict(self.config)
        if self.method in ("internal", "sc", "multisample") and "generation" not in data:
            data["generation"] = run_config.generation.model_dump(mode="json")
        if self.method in ("sc", "multisample") and "seed" not in data:
            data["seed"] = seed
        return make_config(self.method, data)


def _default_baselines() -> list[BaselineSpec]:
    signals = ("lnlp", "mte", "token_sar", "clip_score")
    return [BaselineSpec(method="internal", config={"source": s}) for s in signals] + [
        BaselineSpec(method="internal", config={"source": "fused", "readout": "continuous"}),
        BaselineSpec(method="sc"),
        BaselineSpec(method="multisample"),
    ]


class CorrectionSpec(BaseModel):
    """One self-correction row (`mmboundary.correction`, this project's design): the seed's
    `model` ("vanilla", "sft" or "rl") answers every question of the split with
    confidence-guided self-correction (`config`: `CorrectionConfig` fields; default its
    defaults, sampling seed = the comparison seed). The row's columns are those of the
    corrected chains (internal levels for the vanilla model, expressed levels otherwise, as the
    model's own row); `extra` holds the same model's numbers without it (its greedy chains, from
    the evaluate stage), the accuracy change and the extra compute (`CorrectionRun.compute_summary`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["vanilla", "sft", "rl"] = "vanilla"
    name: str | None = Field(None, description="Row name (default: self-correct-<model>).")
    label: str | None = Field(None, description="Row label in the report (default: from the model).")
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid(self) -> "CorrectionSpec":
        try:
            CorrectionConfig.model_validate(self.config)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
            raise ValueError(f"self-correction config: {problems}") from None
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"self-correction row name {self.name!r}: lower-case letters, digits, '_', '-', '.' only")
        return self

    @property
    def row_name(self) -> str:
        return self.name or f"self-correct-{self.model}"

    @property
    def row_label(self) -> str:
        return self.label or {"vanilla": "Self-correction, vanilla model (internal levels)",
                              "sft": "Self-correction, SFT-only model",
                              "rl": "Self-correction, full method"}[self.model]

    def resolved_config(self, seed: int):
        """The checked `CorrectionConfig` for a seed (its sampling seed is the comparison seed
        unless `config` sets one)."""
        return CorrectionConfig.model_validate({"seed": seed, **self.config})


def _default_corrections() -> list[CorrectionSpec]:
    return [CorrectionSpec(model="vanilla"), CorrectionSpec(model="rl")]


class CompareSpec(BaseModel):
    """What a comparison runs. The defaults are the built-in default's comparison
    (`configs/compare/default.yaml`): every pipeline row, the baselines that apply to the tiny
    model, the method and reference rows on 5 seeds and every other row on 3 of them, test and OOD.

    - `config` / `overrides`: the base run config (None: the built-in default) and `key=value`
      overrides applied to it; every row is an overlay on it (`mmboundary.ablations`). A relative
      `config` path is read from the working directory, else next to the spec file.
    - `with_rl`: add the `rl` stage to the full method (the paper's method). False: the full
      method stops at SFT and the rows that need RL are reported unavailable.
    - `methods`, `ablations`: pipeline rows (names or aliases of `ablations.ROWS`).
    - `references`: the reference rows that know nothing per step (`ablations.REFERENCES`: one
      constant level, a prior level per kind of step; both read from each seed's full run, no
      model is run). **[choice]** Default: both, so that every comparison shows what a row must
      beat; `[]` leaves them out. Every method row is paired with them in the report.
    - `baselines`: `BaselineSpec`s.
    - `corrections`: `CorrectionSpec`s, self-correction rows (default: the vanilla model and the
      full method's model; a row on "rl" is unavailable without the rl stage).
    - `seeds`: run seeds of every row (`seed=<s>`: the training seeds; the built-in benchmark's data
      come from `data.benchmark.seed` and stay the same).
    - `method_seeds`: run seeds of the method and reference rows (`methods`, `references`), a
      superset of `seeds` (the others run on `seeds` only); None: `seeds`. **[choice]** Default:
      `DEFAULT_METHOD_SEEDS` when the spec sets neither key (the built-in default), else None, so
      that a spec written before the key existed runs as it did.
    - `splits`: the evaluated splits reported.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    config: Path | None = None
    overrides: list[str] = Field(default_factory=list)
    with_rl: bool = True
    methods: list[str] = Field(default_factory=lambda: ["vanilla", "sayself", "drl", "expected", "sft_only",
                                                        "full"])
    ablations: list[str] = Field(default_factory=lambda: [
        "wo_lnlp", "wo_mte", "wo_token_sar", "wo_clip_score", "max_pooling", "wo_mapping",
        "wo_r_ka", "wo_r_ec", "wo_r_cs"])
    references: list[str] = Field(default_factory=lambda: list(REFERENCES))
    baselines: list[BaselineSpec] = Field(default_factory=_default_baselines)
    corrections: list[CorrectionSpec] = Field(default_factory=_default_corrections)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1,
                             description="Run seeds of every row.")
    method_seeds: list[int] | None = Field(
        None, description="Run seeds of the method and reference rows: a superset of `seeds` (None: `seeds`).")
    splits: list[Literal["test", "ood"]] = Field(default_factory=lambda: ["test", "ood"], min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r}: lower-case letters, digits, '_', '-', '.' only")
        return v

    @field_validator("methods", "ablations", "references")
    @classmethod
    def _rows(cls, v: list[str], info) -> list[str]:
        out = []
        for name in v:
            row = resolve_row(name)  # ConfigError for an unknown name
            if (row.name in REFERENCES) != (info.field_name == "references"):
                raise ValueError(f"{name!r}: list it under "
                                 f"{'references' if row.name in REFERENCES else 'methods or ablations'}")
            want = "ablation" if info.field_name == "ablations" else ("method", "reference")
            if (row.kind == "ablation") != (want == "ablation"):
                raise ValueError(f"{name!r} is {'an ablation' if row.kind == 'ablation' else 'a method'}: "
                                 f"list it under {'ablations' if row.kind == 'ablation' else 'methods'}")
            if row.name in out:
                raise ValueError(f"row {name!r} is listed twice")
            out.append(row.name)
        return out

    @model_validator(mode="before")
    @classmethod
    def _default_method_seeds(cls, data: Any) -> Any:
        """The built-in default's `method_seeds` when the spec sets neither seeds key."""
        if isinstance(data, dict) and "seeds" not in data and "method_seeds" not in data:
            data = {**data, "method_seeds": list(DEFAULT_METHOD_SEEDS)}
        return data

    @field_validator("seeds", "method_seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if v is None:
            return v
        if len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError(f"{info.field_name} must be distinct and >= 0, got {v}")
        seeds = info.data.get("seeds") if info.field_name == "method_seeds" else None
        if seeds is not None and not set(seeds) <= set(v):
            raise ValueError(f"method_seeds must include every seed of `seeds` (the method and reference rows run "
                             f"on every seed the others run on): {sorted(set(seeds) - set(v))} missing from {v}")
        return v

    @field_validator("splits")
    @classmethod
    def _splits(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"a split is listed twice: {v}")
        return v

    @model_validator(mode="after")
    def _unique_rows(self) -> "CompareSpec":
        names = [b.row_name for b in self.baselines] + [c.row_name for c in self.corrections]
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(ROWS)))
        if clash:
            raise ValueError(f"baseline row name(s) {clash} clash with another row; give them a `name`")
        return self

    def rows(self) -> list[tuple[str, Row | BaselineSpec | CorrectionSpec]]:
        """The rows in report order: the references (vanilla, constant level, per-kind prior), the
        baselines, the methods, the ablations, the full method, the self-correction rows last. Each
        as ("pipeline", Row), ("baseline", BaselineSpec) or ("correction", CorrectionSpec)."""
        chosen = set(self.methods) | set(self.ablations) | set(self.references)
        pipeline = [ROWS[n] for n in ROWS if n in chosen]
        head = [("pipeline", r) for r in pipeline if r.kind == "reference"]
        rest = [("pipeline", r) for r in pipeline if r.kind != "reference"]
        return head + [("baseline", b) for b in self.baselines] + rest + [("correction", c) for c in self.corrections]

    def row_names(self) -> list[str]:
        return [name_of(kind, r) for kind, r in self.rows()]

    def all_seeds(self) -> list[int]:
        """Every seed some row runs on, in run order: `seeds`, then the further `method_seeds`."""
        return list(self.seeds) + [s for s in self.method_seeds or () if s not in self.seeds]

    def seeds_of(self, kind: str, item: Row | BaselineSpec | CorrectionSpec) -> list[int]:
        """The seeds a row of `rows()` runs on (in `all_seeds` order): `method_seeds` for a row
        of `methods` or `references`, `seeds` for the others."""
        if kind == "pipeline" and self.method_seeds is not None \
                and (item.name in self.methods or item.name in self.references):
            return [s for s in self.all_seeds() if s in self.method_seeds]
        return list(self.seeds)

    def row_seeds(self) -> dict[str, list[int]]:
        """The seeds of each row (`seeds_of`), by row name."""
        return {name_of(kind, r): self.seeds_of(kind, r) for kind, r in self.rows()}


def load_spec(path: str | Path) -> CompareSpec:
    """Read a comparison spec (YAML). A bad file or key is a `ConfigError` naming it; a relative
    `config` path that does not exist from the working directory is taken next to the spec."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"comparison spec not found: {p}")
    try:
        data = yaml.safe_load(p.read_text("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(f"{p}: not a valid YAML comparison spec: {str(e)[:300]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys")
    try:
        spec = CompareSpec.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"key '{'.'.join(str(x) for x in err['loc']) or '<root>'}': {err['msg']}"
                             for err in e.errors())
        raise ConfigError(f"{p}: invalid comparison spec: {problems}") from None
    if spec.config is not None and not spec.config.is_absolute() and not spec.config.exists() \
            and (p.parent / spec.config).exists():
        spec = spec.model_copy(update={"config": p.parent / spec.config})
    return spec


def name_of(kind: str, item: Row | BaselineSpec | CorrectionSpec) -> str:
    """The name of a row of `CompareSpec.rows()` (its results folder, its lock)."""
    return item.name if kind == "pipeline" else item.row_name


def label_of(kind: str, item: Row | BaselineSpec | CorrectionSpec) -> str:
    """The label of a row of `CompareSpec.rows()` in the report and the progress display."""
    return item.label if kind == "pipeline" else item.row_label
