"""Safe loading (issue 9, part 4): model weights are read only from safetensors (trainer state
with `torch.load(..., weights_only=True)`, which unpickles tensors and plain values only), and
`trust_remote_code` is never on unless the config turns it on.

Two kinds of check: a scan of the package's source (every `torch.load`, every model-class
`from_pretrained`, every sentence-transformers model, every `trust_remote_code=`, no pickle
module, no `yaml.load`, no `allow_pickle=True`), each scanner first shown to catch a violation
in a snippet; and behaviour: each loader refuses a checkpoint that holds only a pickled
`pytorch_model.bin`, and `load_vlm` passes the configured `trust_remote_code` through.
"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmboundary
from mmboundary.config import RunConfig, load_config

SRC = Path(mmboundary.__file__).resolve().parent
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Classes whose from_pretrained loads weights (tokenizers, processors and configs read JSON/text).
MODEL_CLASS = re.compile(r"(Model|ForCausalLM|ForImageTextToText|ForConditionalGeneration)$")


def _sources() -> dict[Path, str]:
    files = {p: p.read_text("utf-8") for p in sorted(SRC.rglob("*.py"))}
    assert len(files) > 30, "the package's sources were not found"
    return files


def _name(node: ast.AST) -> str:
    """`torch.load` for Attribute(Name('torch'), 'load'); '' for what is not a dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _enclosing(tree: ast.AST, target: ast.AST) -> ast.AST:
    """The innermost function (else the module) that contains `target`."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    node = target
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return node
    return tree


def _sets_use_safetensors(scope: ast.AST) -> bool:
    """`use_safetensors=True` in a dict(...) call or {"use_safetensors": True} in `scope`."""
    for node in ast.walk(scope):
        if isinstance(node, ast.Call) and _is_true(_keyword(node, "use_safetensors")):
            return True
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "use_safetensors" and _is_true(v):
                    return True
    return False


ENCODERS = ("SentenceTransformer", "CrossEncoder")


def _encoder_aliases(scope: ast.AST) -> set[str]:
    """Names bound in `scope` to a sentence-transformers class (`cls = CrossEncoder if ... else
    SentenceTransformer`); a call of such a name is checked like a call of the class."""
    out = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and any(
                isinstance(n, ast.Name) and n.id in ENCODERS for n in ast.walk(node.value)):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return out


def unsafe_loads(source: str) -> list[str]:
    """Where `source` may run code from a file: a `torch.load` without weights_only=True, a model
    `from_pretrained` without safetensors (or a GGUF file), a sentence-transformers model
    without `model_kwargs={"use_safetensors": True}`, pickle, `yaml.load`, `allow_pickle=True`."""
    tree = ast.parse(source)
    aliases = _encoder_aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                if m.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"):
                    found.append(f"line {node.lineno}: imports {m}")
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        where = f"line {node.lineno}: {name}"
        if name == "torch.load" and not _is_true(_keyword(node, "weights_only")):
            found.append(f"{where} without weights_only=True")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            found.append(f"{where} (use yaml.safe_load)")
        if _is_true(_keyword(node, "allow_pickle")):
            found.append(f"{where} with allow_pickle=True")
        if name.endswith(".from_pretrained") and MODEL_CLASS.search(name.rsplit(".", 2)[-2]):
            ok = (_is_true(_keyword(node, "use_safetensors")) or _keyword(node, "gguf_file") is not None
                  or (any(k.arg is None for k in node.keywords)  # **kwargs built in the same function
                      and _sets_use_safetensors(_enclosing(tree, node))))
            if not ok:
                found.append(f"{where} without use_safetensors=True")
        if name.split(".")[-1] in ENCODERS or name in aliases:
            kw = _keyword(node, "model_kwargs")
            if not (kw is not None and _sets_use_safetensors(ast.Module(body=[ast.Expr(kw)], type_ignores=[]))):
                found.append(f"{where} without model_kwargs use_safetensors=True")
    return found


def remote_code_switches(source: str) -> list[str]:
    """Every value given to `trust_remote_code` in `source` (as source text)."""
    tree = ast.parse(source)
    values = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            v = _keyword(node, "trust_remote_code")
            if v is not None:
                values.append(ast.unparse(v))
        if isinstance(node, ast.Dict):
            values += [ast.unparse(v) for k, v in zip(node.keys, node.values)
                       if isinstance(k, ast.Constant) and k.value == "trust_remote_code"]
    return values


# --- the scanners catch what they look for -------------------------------------------------------

@pytest.mark.parametrize("snippet,expected", [
    ("import torch\ntorch.load(p)", "torch.load without weights_only=True"),
    ("import torch\ntorch.load(p, weights_only=False)", "torch.load without weights_only=True"),
    ("AutoModelForCausalLM.from_pretrained(p)", "without use_safetensors=True"),
    ("def f(p):\n    kw = dict(dtype=1)\n    return CLIPModel.from_pretrained(p, **kw)", "without use_safetensors"),
    ("SentenceTransformer(p)", "SentenceTransformer without model_kwargs"),
    ("CrossEncoder(p, model_kwargs={'use_safetensors': False})", "CrossEncoder without model_kwargs"),
    ("def f(c, p):\n    cls = CrossEncoder if c else SentenceTransformer\n    return cls(p)",
     "cls without model_kwargs"),
    ("import pickle", "imports pickle"),
    ("yaml.load(text)", "yaml.load"),
    ("np.load(path, allow_pickle=True)", "allow_pickle=True"),
])
def test_the_scanner_finds_an_unsafe_load(snippet, expected):
    found = unsafe_loads(snippet)
    assert any(expected in f for f in found), found


@pytest.mark.parametrize("snippet", [
    "torch.load(p, weights_only=True)",
    "AutoModelForCausalLM.from_pretrained(p, use_safetensors=True)",
    "AutoModelForCausalLM.from_pretrained(d, gguf_file=name)",
    "def f(p):\n    kw = dict(use_safetensors=True)\n    return CLIPModel.from_pretrained(p, **kw)",
    "AutoTokenizer.from_pretrained(p)",
    "SentenceTransformer(p, model_kwargs={'use_safetensors': True})",
    "def f(c, p):\n    cls = CrossEncoder if c else SentenceTransformer\n"
    "    return cls(p, model_kwargs={'use_safetensors': True})",
    "np.load(path)",
])
def test_the_scanner_passes_a_safe_load(snippet):
    assert unsafe_loads(snippet) == []


def test_the_remote_code_scanner_reads_every_form():
    src = "f(trust_remote_code=True)\nd = {'trust_remote_code': x.y}\ndict(trust_remote_code=spec.trust_remote_code)"
    assert sorted(remote_code_switches(src)) == ["True", "spec.trust_remote_code", "x.y"]


# --- the package's source -------------------------------------------------------------------------

def test_no_unsafe_load_in_the_package():
    problems = [f"{path.relative_to(SRC.parent)}: {p}" for path, text in _sources().items()
                for p in unsafe_loads(text)]
    assert problems == [], "\n".join(problems)


def test_the_scan_sees_the_loads_it_vouches_for():
    """The scan is not vacuous: it meets the known loading calls."""
    text = "\n".join(_sources().values())
    assert len(re.findall(r"torch\.load\(", text)) >= 2          # trainer state: loop, rl
    assert len(re.findall(r"ForImageTextToText\.from_pretrained\(|CLIPModel\.from_pretrained\(", text)) >= 2
    assert re.search(r"cls\(self\.path, .*model_kwargs=\{\"use_safetensors\": True\}", text)


def test_trust_remote_code_only_from_the_config():
    """Nowhere is `trust_remote_code` given a literal True: only False or the spec's setting."""
    values = {v for text in _sources().values() for v in remote_code_switches(text)}
    assert values, "no trust_remote_code switch found: the scan is broken"
    assert values <= {"False", "spec.trust_remote_code"}, values
    assert not any(re.search(r"trust_remote_code\s*=\s*True", t) for t in _sources().values())


def test_trust_remote_code_is_off_by_default_and_in_every_shipped_config():
    assert RunConfig().model.trust_remote_code is False
    configs = sorted(CONFIGS.glob("*.yaml"))
    assert configs, CONFIGS
    for path in configs:
        assert load_config(path).model.trust_remote_code is False, path


class _Stop(Exception):
    pass


@pytest.mark.parametrize("on", [False, True])
def test_load_vlm_passes_the_configured_switch_and_safetensors(monkeypatch, on):
    from mmboundary.models import factory
    from mmboundary.models.spec import ModelSpec

    seen = {}

    class FakeModel:
        @staticmethod
        def from_pretrained(path, **kw):
            seen["model"] = kw
            model = torch.nn.Linear(1, 1)
            model.config = types.SimpleNamespace(model_type="llava")  # load_vlm reads the model type
            return model

    class FakeProcessor:
        @staticmethod
        def from_pretrained(path, **kw):
            seen["processor"] = kw
            raise _Stop

    monkeypatch.setattr(factory, "AutoModelForImageTextToText", FakeModel)
    monkeypatch.setattr(factory, "AutoProcessor", FakeProcessor)
    with pytest.raises(_Stop):
        factory.load_vlm("some/checkpoint", ModelSpec(trust_remote_code=on) if on else None)
    assert seen["model"]["trust_remote_code"] is on and seen["model"]["use_safetensors"] is True
    assert seen["processor"]["trust_remote_code"] is on


# --- behaviour: a pickled checkpoint is refused ----------------------------------------------------

def _pickle_instead(directory: Path) -> None:
    """Replace the directory's model.safetensors by the same weights as pytorch_model.bin."""
    st = directory / "model.safetensors"
    torch.save(load_file(str(st)), directory / "pytorch_model.bin")
    st.unlink()


@pytest.fixture(scope="module")
def tokenizer():
    from mmboundary.models.tokenizer import train_tokenizer

    corpus = [f"There are {i} red circles. So the answer is {i}." for i in range(30)] + ["Question: Answer:"]
    return train_tokenizer(corpus, 400)


def test_load_vlm_refuses_a_pickled_checkpoint(tokenizer, tmp_path):
    from mmboundary.models.factory import build_tiny, load_vlm
    from mmboundary.models.spec import ModelSpec

    spec = ModelSpec(text_num_layers=1, text_hidden_size=16, text_intermediate_size=32, vision_hidden_size=16,
                     vision_num_layers=1, vision_intermediate_size=32, max_length=64)
    build_tiny(tokenizer, spec, seed=0).save(tmp_path / "vlm")
    assert load_vlm(tmp_path / "vlm").kind == "tiny"  # control: the safetensors checkpoint loads
    _pickle_instead(tmp_path / "vlm")
    with pytest.raises(OSError, match="model.safetensors"):
        load_vlm(tmp_path / "vlm")


def test_load_clip_refuses_a_pickled_checkpoint(tokenizer, tmp_path):
    from mmboundary.models.clip import build_clip, load_clip, save_clip
    from mmboundary.models.spec import ClipSpec

    clip = build_clip(tokenizer, ClipSpec(), seed=0)
    save_clip(clip.model, clip.processor, tmp_path / "clip")
    load_clip(tmp_path / "clip")  # control
    _pickle_instead(tmp_path / "clip")
    with pytest.raises(OSError, match="model.safetensors"):
        load_clip(tmp_path / "clip")


def test_sentence_encoder_refuses_a_pickled_checkpoint(tmp_path):
    from transformers import BertConfig, BertModel

    from mmboundary.confidence.similarity import SentenceSimilarity, default_encoder_path
    from mmboundary.errors import ConfigError

    encoder = tmp_path / "encoder"
    cfg = BertConfig(vocab_size=30522, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(encoder)
    minilm = Path(default_encoder_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (encoder / name).write_bytes((minilm / name).read_bytes())
    assert SentenceSimilarity(encoder, device="cpu").embed(["a red circle"]).shape == (1, 8)  # control
    _pickle_instead(encoder)
    for kind in ("bi-encoder", "cross-encoder"):
        with pytest.raises(ConfigError, match="only safetensors"):
            SentenceSimilarity(encoder, kind=kind, device="cpu")
