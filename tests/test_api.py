"""The Python API (`mmboundary.api`) and `mmboundary ask` on a tiny run built by hand: a random
tiny VLM saved as the run's vanilla and SFT models, a normaliser and levels for two signals,
numeric statements (no sentence encoder is loaded)."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image
from typer.testing import CliRunner

from _helpers import QUESTION
from mmboundary.api import LEVEL_STYLES, Answer, Step, answer_table, load
from mmboundary.cli import app
from mmboundary.correction import CorrectionConfig
from mmboundary.errors import DataError, RunError
from mmboundary.statements.chain_format import write_chain

# `examples` (three benchmark examples) and `tiny_run` (a run with complete base, estimate and sft
# stages: `tiny_run.root`) are fixtures of conftest.py.


@pytest.fixture(scope="module")
def sft(tiny_run):
    return load(tiny_run.root)


def _check_steps(answer: Answer):
    assert isinstance(answer, Answer) and isinstance(answer.steps, tuple)
    for i, s in enumerate(answer.steps):
        assert isinstance(s, Step) and s.index == i and s.text
        assert s.expressed_level is None or 1 <= s.expressed_level <= 5
        assert s.internal_level is None or 1 <= s.internal_level <= 5


# --- loading ----------------------------------------------------------------------------------------

def test_load_picks_the_newest_model_of_a_run(tiny_run, sft, tmp_path):
    assert (sft.name, sft.statements, sft.internal_available) == ("sft", True, True)
    assert sft.path == str(tiny_run.root / "sft" / "model")
    vanilla = load(tiny_run.root, stage="vanilla")
    assert (vanilla.name, vanilla.statements, vanilla.internal_available) == ("vanilla", False, True)
    # a model folder inside a run is recognised as that run's model
    inside = load(tiny_run.root / "sft" / "model")
    assert (inside.name, inside.statements, inside.internal_available) == ("sft", True, True)
    with pytest.raises(RunError, match="no 'rl' model .*vanilla, sft"):
        load(tiny_run.root, stage="rl")
    # a plain checkpoint: no internal levels unless a run lends its normaliser and levels
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_run.root / "base" / "model", ckpt)
    plain = load(ckpt, statements=False)
    assert (plain.name, plain.statements, plain.internal_available) == ("ckpt", False, False)
    assert load(ckpt, run=tiny_run.root, statements=False).internal_available
    with pytest.raises(RunError, match="not a run directory"):
        load(ckpt, stage="sft")
    with pytest.raises(RunError, match="no such run directory or checkpoint"):
        load(tmp_path / "missing")
    with pytest.raises(RunError, match="neither a run directory"):
        load(tmp_path)


def test_plain_checkpoint_answers_without_internal_levels(tiny_run, examples, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_run.root / "base" / "model", ckpt)
    a = load(ckpt, statements=False).ask(examples[0].image, QUESTION)
    _check_steps(a)
    assert a.steps and all(s.internal_level is None and s.expressed_level is None for s in a.steps)
    assert not a.internal_available
    with pytest.raises(RunError, match="internal confidence"):
        load(ckpt, statements=False).ask(examples[0].image, QUESTION, correct=True)


# --- asking ----------------------------------------------------------------------------------------

def test_ask_gives_the_greedy_chain_as_typed_steps(tiny_run, examples):
    vanilla = load(tiny_run.root, stage="vanilla")
    ex = examples[0]
    a = vanilla.ask(ex.image, QUESTION, choices=["1", "2", "3"])
    _check_steps(a)
    greedy = vanilla.vlm.generate([QUESTION], [("1", "2", "3")], [str(ex.image)], max_new_tokens=16)[0]
    assert a.text == greedy and a.steps
    assert all(s.internal_level is not None for s in a.steps)  # the run's normaliser and levels
    assert all(s.statement is None and s.expressed_level is None for s in a.steps)  # vanilla: no statements
    assert a.choices == ("1", "2", "3") and a.model == "vanilla"
    assert a.answer_correct is None and all(s.correct is None for s in a.steps)  # no ground truth
    assert a.compute is None and a.corrections == ()
    # a PIL image gives the same answer as its file
    with Image.open(ex.image) as im:
        assert vanilla.ask(im.copy(), QUESTION, choices=["1", "2", "3"]).text == a.text


def test_ask_example_parses_statements_and_judges_steps(sft, examples, monkeypatch):
    ex = examples[1]
    levels = [(t % 5) + 1 for t in range(len(ex.chain))]
    response = write_chain([s.text for s in ex.chain], [f"confidence {lv}/5" for lv in levels])
    false_step = ex.chain[0].text.rstrip(".")
    response_false = response.replace(false_step, "There are 7 purple squares", 1)
    tok = sft.vlm.tokenizer
    for text, first_true in ((response, True), (response_false, False)):
        ids = tok(" " + text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        monkeypatch.setattr(sft.vlm, "generate_ids", lambda *args, ids=ids, **kw: [ids])
        a = sft.ask_example(ex)
        _check_steps(a)
        assert a.text == text
        assert [s.expressed_level for s in a.steps] == levels
        assert [s.statement for s in a.steps] == [f"confidence {lv}/5" for lv in levels]
        assert [s.text for s in a.steps][1:] == [s.text for s in ex.chain][1:]  # without their statements
        assert all(s.internal_level is not None for s in a.steps)
        assert [s.correct for s in a.steps] == [first_true] + [True] * (len(levels) - 1)
        assert a.answer_correct is True
        # without ground truth the same chain has no truth values
        assert sft.ask(ex.image, ex.question, ex.choices).steps[0].correct is None


def test_ask_with_self_correction_reports_the_extra_compute(sft, examples):
    cfg = CorrectionConfig(threshold=5, samples=2, budget=3, step_max_new_tokens=4)
    a = sft.ask(examples[0].image, QUESTION, correction=cfg)
    _check_steps(a)
    assert a.compute is not None and a.corrections  # threshold 5: the first step is examined
    assert 0 < a.compute.sampled_steps <= 3
    assert a.compute.sampled_steps == sum(len(c.candidates) - 1 for c in a.corrections)
    assert [s.index for s in a.steps if s.replaced] == [c.step_index for c in a.corrections if c.replaced]


def test_bad_inputs_are_errors_naming_what_is_wrong(sft, tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(DataError, match=f"image file not found: {missing}"):
        sft.ask(missing, QUESTION)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=f"not an image .*{broken}"):
        sft.ask(broken, QUESTION)
    with pytest.raises(DataError, match="too large"):
        sft.ask(Image.new("RGB", (8000, 6000)), QUESTION)
    with pytest.raises(TypeError, match="file path or a PIL image"):
        sft.ask(b"bytes", QUESTION)
    with pytest.raises(DataError, match="question"):
        sft.ask(Image.new("RGB", (8, 8)), "   ")
    with pytest.raises(DataError, match="choices"):
        sft.ask(Image.new("RGB", (8, 8)), QUESTION, choices="ab")


def test_steps_are_coloured_by_their_level():
    steps = (Step(index=0, text="a.", statement="confidence 1/5", expressed_level=1, internal_level=5),
             Step(index=1, text="b.", internal_level=5), Step(index=2, text="c."))
    table = answer_table(Answer(question="q", model="m", text="a. b. c.", steps=steps, answer=None,
                                statements=True, internal_available=True))
    cells = table.columns[1]._cells
    assert [c.style for c in cells] == [LEVEL_STYLES[1], LEVEL_STYLES[5], "dim"]  # expressed first, else internal
    assert len(set(LEVEL_STYLES.values())) == 5


# --- the command --------------------------------------------------------------------------------------

def test_cli_ask_prints_the_chain_levels_and_answer(tiny_run, examples):
    args = ["ask", "--model", str(tiny_run.root), "--image", str(examples[0].image), QUESTION,
            "--choice", "1", "--choice", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "expressed" in result.output and "internal" in result.output and "answer:" in result.output
    result = CliRunner().invoke(app, args + ["--json", "--stage", "vanilla"])
    assert result.exit_code == 0, result.output
    a = Answer.model_validate_json(result.stdout)
    _check_steps(a)
    assert a.model == "vanilla" and a.choices == ("1", "2") and a.steps
    assert all(s.internal_level is not None for s in a.steps)


def test_cli_ask_self_correct(tiny_run, examples):
    args = ["ask", "-m", str(tiny_run.root), "-i", str(examples[0].image), QUESTION, "--self-correct",
            "--threshold", "5", "--samples", "2", "--budget", "2"]
    result = CliRunner().invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    compute = json.loads(result.stdout)["compute"]
    assert 0 < compute["sampled_steps"] <= 2
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "self-correction: " in result.output


def test_cli_ask_errors(tiny_run, examples, tmp_path):
    missing = tmp_path / "missing.png"
    result = CliRunner().invoke(app, ["ask", "-m", str(tiny_run.root), "-i", str(missing), QUESTION])
    assert result.exit_code == 2
    said = " ".join(result.output.split())  # rich wraps long lines
    assert said.startswith("error:") and f"image file not found: {missing}" in said
    result = CliRunner().invoke(app, ["ask", "-m", str(tiny_run.root), "-i", str(missing), QUESTION,
                                      "--threshold", "9"])
    assert result.exit_code == 2 and "threshold" in result.output
    result = CliRunner().invoke(app, ["ask", "-m", str(tmp_path / "norun"), "-i", str(examples[0].image), QUESTION])
    assert result.exit_code == 2 and "no such run directory" in " ".join(result.output.split())
