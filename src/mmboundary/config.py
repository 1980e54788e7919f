"""The configuration tree: YAML files in `configs/`, validated by pydantic, overridable from the CLI.

Unknown keys and wrong types are errors that name the key (`ConfigError`). Overrides are
dotted keys with YAML values: `--set base.lr=3e-4 --set data.benchmark.n_train=500`.
The fully resolved config is written to every run directory (`config.yaml`). A section given
in part keeps the defaults of the rest, its own ones where the section's default is customised
(`sft.train.max_steps=3` keeps SFT's lr 3e-4 and 10 % warm-up; `schema.Section`).

**[choice]** Paths (`PATH_KEYS`: `data.train`, `.test`, `.ood`, `.image_dir`, `.ood_image_dir`,
`model.path`, `clip.path`). A relative path in a config file is looked up in that file's
folder; when something exists there it becomes that absolute path, otherwise it is left as
written and read, later, from the working directory (so `model.path: Qwen/Qwen2-VL-7B-Instruct`
stays a hub id, and the shipped overlays' `datasets/...`, relative to the repository root, keep
working when run from there). A `--set` value is looked up the same way in the working
directory (made absolute when it exists there). Absolute paths and the built-in default are
never changed. A run's saved `config.yaml` therefore holds absolute paths for everything that
existed when the run was created; it is read back as written (`relative_to_file=False`), never
re-resolved against the run folder (docs/data-format.md, "Paths in a config").

Defaults that the paper leaves open are documented on the field that holds them.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import Field, ValidationError, model_validator

from mmboundary.confidence.fusion import FusionConfig
from mmboundary.data.benchmark.spec import BenchmarkSpec
from mmboundary.errors import ConfigError
from mmboundary.models.spec import ClipSpec, ModelSpec
from mmboundary.schema import Section
from mmboundary.training.rl_config import RLConfig


class DataConfig(Section):
    """Where the examples come from."""

    source: Literal["benchmark", "jsonl", "annotated"] = Field(
        "benchmark", description="'benchmark': the built-in procedurally drawn benchmark; 'jsonl': "
        "the project's JSONL format (docs/data-format.md); 'annotated': the authors' A-OKVQA / "
        "ScienceQA / CulturalVQA format joined with an image folder.")
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    train: Path | None = Field(None, description="Train file (jsonl / annotated sources).")
    test: Path | None = Field(None, description="In-domain test file.")
    ood: Path | None = Field(None, description="Out-of-distribution test file (optional).")
    image_dir: Path | None = Field(None, description="Image folder for the annotated format.")
    annotated_dataset: Literal["aokvqa", "scienceqa", "culturalvqa"] | None = Field(
        None, description="Annotated format: which dataset's id/answer/image rules to apply (None: detected "
        "from the first record; ScienceQA must be named).")
    ood_annotated_dataset: Literal["aokvqa", "scienceqa", "culturalvqa"] | None = Field(
        None, description="Annotated format: the OOD split's dataset when it differs from train/test (the "
        "paper: CulturalVQA out of domain); None: `annotated_dataset`.")
    match_split: bool = Field(
        True, description="Keep only the records whose own `split` field names the split the file is loaded "
        "as (records without one are taken). **[choice]** True, for files that hold several splits; the "
        "annotated data overlays set False: the authors' files hold one split each and their A-OKVQA "
        "records say 'val' where the run uses them as 'test'.")
    ood_image_dir: Path | None = Field(
        None, description="Annotated format: the OOD split's image folder when it differs; None: `image_dir`.")

    @model_validator(mode="after")
    def _files_for_external_sources(self) -> "DataConfig":
        if self.source != "benchmark":
            missing = [k for k in ("train", "test") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"data.source={self.source!r} needs data.{missing[0]}")
            if self.source == "annotated" and self.image_dir is None:
                raise ValueError("data.source='annotated' needs data.image_dir")
        return self

    def split_files(self) -> list[tuple[str, Path, Path | None, str | None]]:
        """(split, file, image folder, annotated dataset) of each configured split file, in the
        order train, test, ood; the OOD split takes `ood_image_dir` / `ood_annotated_dataset` when
        they are set."""
        out = []
        for split in ("train", "test", "ood"):
            src = getattr(self, split)
            if src is None:
                continue
            ood = split == "ood"
            image_dir = self.ood_image_dir if ood and self.ood_image_dir is not None else self.image_dir
            dataset = self.ood_annotated_dataset if ood and self.ood_annotated_dataset else self.annotated_dataset
            out.append((split, src, image_dir, dataset))
        return out


class TrainConfig(Section):
    """A supervised training loop (used by `base`; the SFT stage has its own section later)."""

    epochs: float = Field(8.0, gt=0, description="Passes over the training set.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimiser steps (overrides epochs).")
    batch_size: int = Field(32, gt=0)
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate. **[choice]** 1e-3 for the tiny "
                      "VLM from scratch (3e-3 gave lower accuracy).")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Linear warm-up share of steps, then cosine decay.")
    grad_clip: float = Field(1.0, gt=0)
    log_every: int = Field(20, gt=0)


class BaseStageConfig(Section):
    """Stage `base`: make the vanilla VLM and the CLIP model of the built-in default.

    On the built-in benchmark no pretrained VLM exists offline, so a tiny VLM is trained on the
    reference chains (no confidence statements) and stands in for the pretrained MLLM; it must
    stay imperfect. Skipped for the VLM when `model.path` names a checkpoint, and for CLIP
    when `clip.path` does.
    """

    vlm: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=6),
        description="**[choice]** 6 epochs on benchmark v2 (docs/benchmark.md run K: 3 epochs leave reasoning "
                    "over the object list at 0.6; part of v2's frozen vanilla model).")
    clip: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=6, lr=3e-4, batch_size=64, warmup_ratio=0.1),
        description="Contrastive training of the small CLIP. **[choice]** lr 3e-4: at 1e-3 the "
                    "embeddings collapse to a constant (loss stuck at ln(batch)) from which they never "
                    "recover.")
    caption_share: float = Field(
        0.5, ge=0, lt=1, description="**[choice]** Share of the base VLM's training items that are "
        "dense captions of train images (every colour and shape count; built-in benchmark only) "
        "instead of question/chain pairs: a perception curriculum, as in LLaVA's alignment stage.")
    caption_objects: bool = Field(
        True, description="Captions start with one sentence per object (\"At the top left there is a large "
        "red circle.\"), as benchmark v2's chains do; v1: count sentences only (false).")
    vision_init: Literal["clip", "random"] = Field(
        "random", description="'clip': start the VLM's vision tower from the CLIP trained just "
        "before it (as LLaVA starts from a pretrained CLIP ViT) when their shapes match. "
        "**[choice]** 'random' (from scratch) by default: with the small CLIP trained here, "
        "starting from it did not raise the vanilla model's accuracy (measured: 0.357 vs 0.407 "
        "on the test split, one seed each).")
    train_examples: int | None = Field(
        None, gt=0, description="Use only the first N train examples for the base model (None: all).")


class GenerationConfig(Section):
    max_new_tokens: int = Field(
        224, gt=0, description="Longest chain generated. **[choice]** 224: benchmark v2's longest OOD chain is "
        "118 tokens, ~222 with a statement after each step (v1: 128).")
    batch_size: int = Field(64, gt=0)
    do_sample: bool = Field(False, description="Greedy by default: no sampling is ever implicit.")
    temperature: float = Field(1.0, gt=0)


def _offline_minilm(model: str | None, kind: str) -> bool:
    """Whether a sentence model setting is the offline MiniLM bi-encoder, the one whose default
    thresholds were measured."""
    return model is None and kind == "bi-encoder"


class EvaluateConfig(Section):
    splits: list[Literal["train", "test", "ood"]] = Field(default_factory=lambda: ["test", "ood"])
    limit: int | None = Field(None, gt=0, description="Evaluate only the first N examples of each split.")
    match_threshold: float | None = Field(
        None, description="Similarity threshold of the one-to-one step matching behind F1 "
        "(method.md section 6; None: the matching module's documented default).")
    match_model: str | None = Field(
        None, description="Sentence-transformers model of the matching (None: the offline MiniLM).")
    match_kind: Literal["bi-encoder", "cross-encoder"] = "bi-encoder"

    @model_validator(mode="after")
    def _threshold_for_other_models(self) -> "EvaluateConfig":
        if self.match_threshold is None and not _offline_minilm(self.match_model, self.match_kind):
            raise ValueError("evaluate.match_threshold must be set when evaluate.match_model or match_kind is not "
                             "the default: the default 0.65 was measured for the offline MiniLM bi-encoder "
                             "(evaluation/matching.py)")
        return self


class JudgeConfig(Section):
    """Step truth: how each generated step is judged correct (`judging`, `evaluation.judges`;
    docs/data-format.md "Step truth"). Every stage that reads a step's truth (estimate, rl,
    evaluate, the baselines, the API) uses the one judge built from this section."""

    kind: Literal["auto", "exact", "encoder", "consistent"] = Field(
        "auto", description="'exact': the built-in benchmark's checker; 'encoder': matched to a reference step by "
        "sentence similarity; 'consistent': matched, and its numbers, colours, places, sizes, names and negation "
        "agree with that step; 'auto': exact where the example has a scene, else 'consistent'.")
    model: str | None = Field(
        None, description="Sentence-transformers model of the text judges (None: the offline MiniLM).")
    similarity: Literal["bi-encoder", "cross-encoder"] = Field(
        "bi-encoder", description="How `model` scores a pair: cosine of two embeddings, or one cross-encoder pass.")
    threshold: float | None = Field(
        None, description="Similarity at or above which a step can match a reference step (None: the value "
        "measured for the MiniLM, `judging.DEFAULT_THRESHOLDS`; required with another model).")

    @model_validator(mode="after")
    def _threshold_for_other_models(self) -> "JudgeConfig":
        if self.threshold is None and not _offline_minilm(self.model, self.similarity):
            raise ValueError("judge.threshold must be set when judge.model or judge.similarity is not the "
                             "default: the default threshold was measured for the offline MiniLM bi-encoder "
                             "(measure one with benchmarks/step_judges.py)")
        return self


class EstimateConfig(Section):
    """Stage `estimate`: the vanilla model's chains and per-step internal confidence (section 2).

    The normaliser and the level thresholds are fitted on the train split's steps and reused on
    every other split (and later by RL and evaluation)."""

    splits: list[Literal["train", "test", "ood"]] = Field(default_factory=lambda: ["train", "test", "ood"])
    train_examples: int | None = Field(
        None, gt=0, description="Use only the first N train examples (None: all).")
    limit: int | None = Field(None, gt=0, description="Use only the first N examples of test/ood.")
    batch_size: int = Field(16, gt=0, description="Chains per teacher-forced forward pass.")
    signals: list[Literal["lnlp", "mte", "token_sar", "clip_score"]] = Field(
        default_factory=lambda: ["lnlp", "mte", "token_sar", "clip_score"])
    similarity_model: str | None = Field(
        None, description="TokenSAR's sentence similarity g: a sentence-transformers model path; "
        "**[choice]** None = the offline all-MiniLM-L6-v2 encoder (cosine).")
    similarity_kind: Literal["bi-encoder", "cross-encoder"] = "bi-encoder"
    fusion: FusionConfig = Field(default_factory=FusionConfig)


class StatementsConfig(Section):
    """How levels become text and back (method.md section 3)."""

    kind: Literal["statement", "numeric"] = Field(
        "statement", description="'statement': a clause from the packaged pool after each step "
        "(the paper); 'numeric': 'confidence 4/5' instead (the 'w/o S-S mapping' ablation).")
    min_similarity: float | None = Field(
        None, ge=-1, le=1, description="Backward mapping: below this best cosine similarity to the references a "
        "text is unparsed, whatever the statement detector says (None: the mapper's documented default, 0.4).")
    granularity: Literal["step", "answer"] = Field(
        "step", description="'step': a statement after every step (MMBoundary). 'answer': one statement, "
        "after the final step, for the whole answer (the SaySelf-style baseline, "
        "`statements/granularity.py`): the SFT data states the answer's level (**[choice]** the mean of its "
        "steps' internal levels, rounded half up), the rl stage scores one step per response (the answer), "
        "and at evaluation every step carries the answer's level.")


class SftDataConfig(Section):
    """Stage `sft_data`: the vanilla model's own train chains with a statement after each step
    (method.md section 4, steps 1-3), saved as a Hugging Face `datasets` dataset."""

    seed: int | None = Field(None, description="Seed of the random choice of statements (None: the run's seed).")
    statements_per_level: int | None = Field(
        1, gt=0, description="Draw each step's statement from the first N statements of its level's "
        "pool (None: the whole pool, as the paper's random choice among ~40). **[choice]** 1 for the "
        "tiny default: trained on 36 phrasings per level, the tiny model spliced them under greedy "
        "decoding ('and I amut I am confident') and its answer accuracy fell 14 points; a 7B model "
        "can take the whole pool (the real-model configs set None). Backward mapping always uses "
        "the whole pool.")
    drop_unanswered: bool = Field(
        False, description="Leave out chains that state no final answer. **[choice]** kept by "
        "default: the warm-up teaches the format on the model's own outputs, wrong or not.")


class SftConfig(Section):
    """Stage `sft`: fine-tune the vanilla model on `sft_data` with the loss on response tokens only."""

    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=6, lr=3e-4, batch_size=32, warmup_ratio=0.1),
        description="**[choice]** 6 epochs at lr 3e-4 for the tiny model trained from scratch "
        "(measured on the default, test answer accuracy vs the vanilla model's 0.467: 3 epochs "
        "0.423, 6 epochs 0.450; lr 1e-4 for 3 epochs 0.300, the format half-learnt). The paper, on "
        "7B models with LoRA: lr 1e-4, batch 16, 10% warm-up.")
    finetune: Literal["full", "lora"] = Field(
        "full", description="'full': every weight; 'lora': PEFT LoRA adapters on the language "
        "model's attention and MLP projections, merged into the weights when saved. **[choice]** "
        "full for the tiny default; the real-model configs use LoRA.")
    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get LoRA adapters (in the language model only).")
    save_every: int = Field(50, gt=0, description="Optimiser steps between resumable checkpoints.")
    replay_share: float = Field(
        0.0, ge=0, lt=1, description="Share of SFT items that replay the base stage's perception "
        "curriculum (dense captions of train images, no statements) on the built-in benchmark, "
        "against forgetting. **[choice]** 0: the paper's warm-up on statement-annotated chains "
        "only (measured, 3 epochs: 0.3 replay gave test accuracy 0.427 vs 0.423 without, OOD "
        "0.280 vs 0.300).")


StageName = Literal["data", "base", "estimate", "sft_data", "sft", "rl", "evaluate"]
#: The stage names in pipeline order (what each stage is: `mmboundary.stages.STAGES`).
STAGE_NAMES: tuple[str, ...] = get_args(StageName)
#: Stages `mmboundary run` runs unless the config lists others: the whole method.
DEFAULT_STAGES = STAGE_NAMES


class RunConfig(Section):
    """A whole experiment. `stages` lists what `mmboundary run` executes, in order."""

    name: str = "default"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    stages: list[StageName] = Field(default_factory=lambda: list(DEFAULT_STAGES),
                                    description="Stages `mmboundary run` runs, in this order.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelSpec = Field(default_factory=ModelSpec)
    clip: ClipSpec = Field(default_factory=ClipSpec)
    base: BaseStageConfig = Field(default_factory=BaseStageConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    estimate: EstimateConfig = Field(default_factory=EstimateConfig)
    statements: StatementsConfig = Field(default_factory=StatementsConfig)
    sft_data: SftDataConfig = Field(default_factory=SftDataConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)


# --- loading, overriding, dumping -------------------------------------------------------------

def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        else:
            lines.append(f"key '{key}': {e['msg']}")
    return f"{source}: invalid config: " + "; ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a","b","c"], yaml-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict (a copy). Intermediate keys are created as needed;
    whether they exist in the schema is checked when the result is validated."""
    data = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = value
    return data


def merge_configs(base: dict, overlay: dict) -> dict:
    """`overlay` laid over `base` (copies): mappings are merged key by key, recursively; any other
    value (a list, a scalar, null) of the overlay replaces the base's."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


#: The config keys that name a local file or folder (`model.path`, `clip.path`: or a hub id).
PATH_KEYS: tuple[tuple[str, str], ...] = (
    ("data", "train"), ("data", "test"), ("data", "ood"), ("data", "image_dir"), ("data", "ood_image_dir"),
    ("model", "path"), ("clip", "path"))


def resolve_path(value: Any, base: Path) -> Any:
    """A path value of a config (module docstring): a relative path under which something exists
    in `base` becomes that absolute path (normalised lexically, links not followed); anything
    else (absolute, not there, e.g. a hub id, or not a string) is returned as it is."""
    if not isinstance(value, str) or not value.strip():
        return value
    p = Path(value)
    if p.is_absolute() or not (base / p).exists():
        return value
    return os.path.normpath((base / p).absolute())


def _resolve_paths(data: dict, base: Path, prefix: list[str] | None = None) -> None:
    """Resolve, in place, the `PATH_KEYS` of a config mapping against `base` (only those under
    the dotted key `prefix` when given: what one override set)."""
    for section, key in PATH_KEYS:
        if prefix is not None and [section, key][:len(prefix)] != prefix[:2]:
            continue
        node = data.get(section)
        if isinstance(node, dict) and key in node:
            node[key] = resolve_path(node[key], base)


def load_config(path: str | Path | list[str | Path] | tuple | None = None,
                overrides: list[str] | None = None, *, relative_to_file: bool = True) -> RunConfig:
    """Read a YAML config (None: the built-in default), apply overrides, validate.

    A list of files is layered in order with `merge_configs` (later files win), e.g. a model
    overlay then a data overlay: `configs/models/qwen2-vl-7b.yaml`, `configs/data/aokvqa.yaml`.
    Each file's relative paths are looked up in its own folder, the overrides' in the working
    directory (module docstring); `relative_to_file=False` reads the files' paths as written
    (a run folder's saved `config.yaml`, whose paths were resolved when the run was created)."""
    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)] if path is not None else []
    source = " + ".join(str(p) for p in paths) or "<default config>"
    data: dict = {}
    for p in paths:
        layer = _read_config_file(p)
        if relative_to_file:
            _resolve_paths(layer, p.parent)
        data = merge_configs(data, layer)
    if overrides:
        data = apply_overrides(data, overrides)
        cwd = Path.cwd()
        for item in overrides:
            _resolve_paths(data, cwd, parse_override(item)[0])
        source += " + overrides"
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None


def _read_config_file(p: Path) -> dict:
    """The mapping in one YAML config file (errors name the file)."""
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot be read: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of thousands of digits, deep nesting
        raise ConfigError(f"{p}: cannot be read as a config: {type(e).__name__}: "
                          f"{str(e)[:200]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys")
    return data


def dump_config(cfg: RunConfig) -> str:
    """The fully resolved config as YAML (every default written out)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_diff(a: RunConfig, b: RunConfig, *, paths_from: Path | None = None) -> list[str]:
    """Dotted keys whose values differ between two configs. With `paths_from`, the `PATH_KEYS`
    that name the same place (a relative path read from `paths_from`, an absolute one) are equal:
    a run created before config paths were resolved saved them relative."""
    if paths_from is not None:
        return [key for key in config_diff(a, b) if not _same_place(a, b, key, paths_from)]

    def walk(x: Any, y: Any, prefix: str) -> list[str]:
        if isinstance(x, dict) and isinstance(y, dict):
            out = []
            for k in sorted(set(x) | set(y)):
                out += walk(x.get(k), y.get(k), f"{prefix}.{k}" if prefix else k)
            return out
        return [] if x == y else [prefix]

    return walk(a.model_dump(mode="json"), b.model_dump(mode="json"), "")


def _same_place(a: RunConfig, b: RunConfig, key: str, base: Path) -> bool:
    if tuple(key.split(".")) not in PATH_KEYS:
        return False
    section, name = key.split(".")
    x, y = getattr(getattr(a, section), name), getattr(getattr(b, section), name)
    if x is None or y is None:
        return False
    return os.path.normpath((base / x).absolute()) == os.path.normpath((base / y).absolute())
