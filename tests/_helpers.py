"""Plain helpers several test modules share (fixtures live in conftest.py). tests/ is on the path
(pytest's default import mode), so a test imports them with `from _helpers import ...`.

The package's heavy modules (torch, transformers) are imported inside the functions that need
them, so that a test module which only needs a path or an image stays quick to import.

- the tiny models: `tiny_spec`, `tiny_tokenizer`, `tiny_normalizer` / `tiny_levels` /
  `tiny_scoring_context` (two cheap signals, numeric statements), `build_tiny_run` (a run with
  data-free base, estimate and sft stages, for the tests that load a model through `mmboundary.api`);
- images: `COLORS`, `SHAPES`, `scene` (a coloured square on white), `png_header_only` (a PNG
  bomb), `LOADER_FIXTURES` / `LOADER_IMAGES` (tests/fixtures/loaders);
- the inspector: `QUESTION`, `write_results` (hand-made evaluate output), `post_ask`, `Server`
  (`mmboundary serve` in a subprocess);
- `small_run` (the overrides of a miniature of the built-in default, every stage);
- `TableSimilarity`: a sentence similarity read from a table, counting its calls (matching, judges).
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageDraw

TESTS = Path(__file__).resolve().parent

# --- the tiny models --------------------------------------------------------------------------------


def tiny_spec():
    """The `ModelSpec` of the tiny random VLMs: one layer, hidden size 32, 160 tokens."""
    from mmboundary.models.spec import ModelSpec

    return ModelSpec(text_num_layers=1, text_hidden_size=32, text_intermediate_size=64, vision_hidden_size=32,
                     vision_num_layers=1, vision_intermediate_size=64, max_length=160)


#: The statements of `statements.kind=numeric`, which the tiny tokenizers are trained on.
NUMERIC_STATEMENTS = [f"confidence {k}/5" for k in range(1, 6)]


def tiny_tokenizer(examples, extra: list[str] = ()):
    """A 500-token tokenizer trained on the examples' texts and, five times over, the numeric
    statements and `extra`."""
    from mmboundary.models.tokenizer import train_tokenizer
    from mmboundary.training.base import tokenizer_corpus

    return train_tokenizer(tokenizer_corpus(examples) + (NUMERIC_STATEMENTS + list(extra)) * 5, 500)


def tiny_normalizer():
    """A normaliser of the two cheap signals (lnlp, mte): no CLIP, no sentence encoder."""
    from mmboundary.confidence.fusion import Normalizer, SignalRange

    return Normalizer(ranges={"lnlp": SignalRange(lo=1.0, hi=500.0, count=10),
                              "mte": SignalRange(lo=0.0, hi=7.0, count=10)})


def tiny_levels():
    from mmboundary.confidence.fusion import Levels

    return Levels(kind="meanstd", thresholds=(0.2, 0.4, 0.6, 0.8), mean=0.5, std=0.2, count=10)


def tiny_scoring_context():
    """The internal-confidence context of a tiny run: numeric statements, `tiny_normalizer`,
    `tiny_levels`, fusion of lnlp and mte."""
    from mmboundary.confidence.fusion import FusionConfig
    from mmboundary.confidence.scorer import ScoringContext
    from mmboundary.statements.mapping import NumericMapper

    return ScoringContext(mapper=NumericMapper(), normalizer=tiny_normalizer(), levels=tiny_levels(),
                          fusion=FusionConfig(ablate=["token_sar", "clip_score"]), signals=("lnlp", "mte"))


class TinyRun(NamedTuple):
    root: Path
    examples: list


def build_tiny_run(root: Path, image_dir: Path) -> TinyRun:
    """A run with complete data-free base, estimate and sft stages and three benchmark examples
    whose images are in `image_dir`: random tiny VLMs as the vanilla and SFT models, numeric
    statements, `tiny_normalizer` and `tiny_levels` over two signals."""
    from mmboundary.config import load_config
    from mmboundary.data.benchmark import BenchmarkSpec, generate_examples
    from mmboundary.models.factory import build_tiny
    from mmboundary.runs import Run

    spec = tiny_spec()
    examples = generate_examples(BenchmarkSpec.version("v1", n_train=3, n_test=0, n_ood=0), "train", image_dir)
    tokenizer = tiny_tokenizer(examples)
    cfg = load_config(None, ["statements.kind=numeric", "estimate.signals=[lnlp,mte]",
                             "estimate.fusion.ablate=[token_sar,clip_score]", "generation.max_new_tokens=16",
                             "device=cpu"])
    run = Run.open(root, cfg)
    build_tiny(tokenizer, spec, seed=0).save(root / "base" / "model")
    run.mark_complete("base")
    tiny_normalizer().save(root / "estimate" / "normalizer.json")
    tiny_levels().save(root / "estimate" / "levels.json")
    run.mark_complete("estimate")
    build_tiny(tokenizer, spec, seed=1).save(root / "sft" / "model")
    run.mark_complete("sft")
    return TinyRun(root, examples)


# --- images -----------------------------------------------------------------------------------------

COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle"]
LOADER_FIXTURES = TESTS / "fixtures" / "loaders"
LOADER_IMAGES = LOADER_FIXTURES / "images"


def scene(color: str, size: tuple[int, int] = (48, 48), box=(8, 8, 30, 30)) -> Image.Image:
    """A `color` rectangle (`box`) on a white image of `size`."""
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).rectangle(box, fill=color)
    return img


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height and holds no pixel data (it opens, then fails to verify)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --- the inspector ----------------------------------------------------------------------------------

QUESTION = "How many circles are there?"


def _results_chain(eid, steps, answer="2", right=True):
    from mmboundary.records import GeneratedChain, GeneratedStep

    return GeneratedChain(example_id=eid, text=" ".join(t for t, *_ in steps), answer=answer, answer_correct=right,
                          steps=tuple(GeneratedStep(text=t, start=0, end=len(t), correct=c,
                                                    statement=None if lv is None else f"confidence {lv}/5", level=lv)
                                      for t, lv, c in steps))


def write_results(root: Path, first_id: str = "a") -> Path:
    """Hand-made evaluate output in `root`: sft chains with expressed levels, vanilla chains whose
    internal levels are in estimate/steps_test.jsonl, a metrics.json. `first_id`: the id of the
    example with the largest error (the browser test gives it one made of HTML)."""
    ev = root / "evaluate"
    ev.mkdir(parents=True, exist_ok=True)
    sft = [
        _results_chain("b", [("s1.", 3, True), ("s2.", 1, False)]),        # (|0.5-1| + |0.1-0|) / 2 = 0.3
        _results_chain(first_id, [("s1.", 5, False)], right=False),        # |0.9-0| = 0.9
        _results_chain("d", [("s1.", None, True), ("s2.", 4, None)]),      # no step with level and truth: None
        _results_chain("c", [("s1.", 2, True), ("s2.", None, False)]),     # |0.3-1| = 0.7
    ]
    (ev / "chains_sft_test.jsonl").write_text("".join(c.model_dump_json() + "\n" for c in sft))
    vanilla = [_results_chain(first_id, [("v1.", None, True), ("v2.", None, True)]),
               _results_chain("b", [("v1.", None, False)])]
    (ev / "chains_vanilla_test.jsonl").write_text("".join(c.model_dump_json() + "\n" for c in vanilla))
    (root / "estimate").mkdir(exist_ok=True)
    steps = [(first_id, 0, 5), (first_id, 1, 4), ("b", 0, 5)]  # a: (0.1 + 0.3) / 2 = 0.2; b: 0.9
    (root / "estimate" / "steps_test.jsonl").write_text(
        "".join(json.dumps({"example_id": e, "step_index": i, "level": lv}) + "\n" for e, i, lv in steps))
    report = {"accuracy": 0.5, "ece": 0.25, "mece": 0.125, "auroc": 0.75, "brier": 0.2, "parsed_share": 0.8,
              "level_shares": {"1": 0.2, "3": 0.8}}
    (ev / "metrics.json").write_text(json.dumps({"test": {
        "sft": {"answer_accuracy": 0.5, "expressed": report, "f1": 0.6},
        "vanilla": {"answer_accuracy": 0.25, "internal": {**report, "ece": 0.5}, "f1": None},
        "vanilla_internal_signals": {"lnlp": {}}}}))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = "mmboundary-test-boundary"
    out = io.BytesIO()
    for k, v in fields.items():
        for item in v if isinstance(v, list) else [v]:
            out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{item}\r\n".encode())
    for k, (name, data) in files.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{name}\"\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def post_ask(base: str, image: bytes, question: str = QUESTION, timeout: float = 60):
    body, ctype = multipart({"question": question}, {"image": ("scene.png", image)})
    req = urllib.request.Request(base + "/api/ask", data=body, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


class Server:
    """`mmboundary serve` in a subprocess on a free loopback port."""

    def __init__(self, model: Path, *extra: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMBOUNDARY_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "mmboundary.cli", "serve", "--model", str(model),
                                      "--port", str(self.port), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stdout.read().decode()}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("server did not start")

    def listening_addresses(self) -> set[str]:
        """Local addresses of the server's listening TCP sockets on its port (from /proc)."""
        out = set()
        for table in ("tcp", "tcp6"):
            for line in Path(f"/proc/{self.proc.pid}/net/{table}").read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, port = local.split(":")
                if state == "0A" and int(port, 16) == self.port:  # 0A = LISTEN
                    out.add(addr)
        return out

    def stop(self) -> str:
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.decode(errors="replace")

    def __enter__(self):
        try:
            self.wait()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()


# --- whole runs -------------------------------------------------------------------------------------

def small_run(n_ood: int = 8) -> list[str]:
    """`--set` overrides of a miniature of the built-in default with every stage (about a minute):
    48 train, 8 test and `n_ood` OOD examples, a few steps of each training stage."""
    return [
        "data.benchmark.n_train=48", "data.benchmark.n_test=8", f"data.benchmark.n_ood={n_ood}",
        "base.vlm.max_steps=4", "base.vlm.batch_size=8", "base.clip.max_steps=2", "base.clip.batch_size=8",
        "generation.max_new_tokens=12", "sft.train.max_steps=3", "sft.train.batch_size=8",
        "rl.iterations=1", "rl.rollout_batch_size=2", "rl.samples_per_question=2", "rl.max_new_tokens=12",
        "rl.minibatch_size=2", "rl.ppo_epochs=1", "stages=[data,base,estimate,sft_data,sft,rl,evaluate]",
    ]


class TableSimilarity:
    """A `PairSimilarity` that reads scores from a table (0.0 for a pair it lacks) and counts its
    calls and the pairs it was asked."""

    def __init__(self, table: dict[tuple[str, str], float] | None = None):
        self.table = dict(table or {})
        self.calls = 0
        self.seen: list[tuple[str, str]] = []

    def pairwise(self, pairs):
        import numpy as np

        self.calls += 1
        self.seen.extend(pairs)
        return np.array([self.table.get(p, 0.0) for p in pairs], dtype=float)

