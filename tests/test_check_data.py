"""`mmboundary check-data` / `data.check`: a good folder passes with exact counts; a broken one
lists every problem (file, line, field), not only the first, and exits 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from _helpers import LOADER_FIXTURES, LOADER_IMAGES
from mmboundary.cli import app
from mmboundary.config import DataConfig
from mmboundary.data.check import check_data, check_split

FIXTURES = LOADER_FIXTURES
IMAGES = LOADER_IMAGES


def _record(qid: str, image_id: int, question: str = "What is shown?", reasoning=None) -> dict:
    return {"question_id": qid, "image_id": image_id, "question": question, "choices": ["a", "b"],
            "correct_choice_idx": 0, "direct_answers": ["a"],
            "keys_filtered": {"Image_level": ["A thing."],
                              "Reasoning_level": ["So, the answer is a"] if reasoning is None else reasoning}}


@pytest.fixture()
def good_folder(tmp_path) -> Path:
    """A-OKVQA fixture as train, one A-OKVQA record as test, CulturalVQA (as .jpg) as OOD."""
    root = tmp_path / "good"
    (root / "coco").mkdir(parents=True)
    (root / "cvqa").mkdir()
    for name in ("000000004134.jpg", "000000377368.jpg"):
        shutil.copy(IMAGES / name, root / "coco" / name)
    for i in (2, 7):
        Image.open(IMAGES / f"{i}.png").convert("RGB").save(root / "cvqa" / f"{i}.jpg")
    shutil.copy(FIXTURES / "aokvqa_small.json", root / "train.json")
    (root / "test.json").write_text(json.dumps([_record("t1", 4134)]))
    shutil.copy(FIXTURES / "culturalvqa_small.json", root / "ood.json")
    return root


def _config(root: Path) -> DataConfig:
    return DataConfig(source="annotated", annotated_dataset="aokvqa", train=root / "train.json",
                      test=root / "test.json", ood=root / "ood.json", image_dir=root / "coco",
                      ood_annotated_dataset="culturalvqa", ood_image_dir=root / "cvqa", match_split=False)


def test_good_folder_counts(good_folder):
    report = check_data(_config(good_folder))
    assert report.problems == []
    by = {s.split: s for s in report.splits}
    train, test, ood = by["train"], by["test"], by["ood"]
    # aokvqa_small: 3 records, the third repeats the first's id with the same question
    assert (train.records, train.examples, train.duplicate_ids) == (3, 2, 1)
    assert (train.multiple_choice, train.with_chain, train.without_chain) == (1, 2, 0)
    assert train.steps == 3 + 2 and train.bad_images == 0 and train.kind == "aokvqa"
    assert (test.records, test.examples, test.steps) == (1, 1, 2)
    assert (ood.kind, ood.records, ood.examples, ood.multiple_choice, ood.steps) == ("culturalvqa", 2, 2, 0, 3 + 2)
    # the repeated id is a warning naming record 3, not a problem
    assert [(w.line, w.field) for w in report.warnings] == [(3, "question_id")]
    assert report.ok() and not report.ok(strict=True)


def test_broken_folder_lists_every_problem(tmp_path):
    root = tmp_path / "broken"
    (root / "img").mkdir(parents=True)
    shutil.copy(IMAGES / "000000004134.jpg", root / "img" / "000000004134.jpg")
    (root / "img" / "000000000555.jpg").write_bytes(b"this is not a jpeg")
    no_question = _record("q2", 4134)
    del no_question["question"]
    no_chain = _record("q4", 4134)
    no_chain["keys_filtered"] = {"Image_level": [], "Reasoning_level": []}  # the filter rejected every step
    records = [
        _record("q1", 4134),                            # 1: fine
        no_question,                                    # 2: missing question
        _record("q3", 999),                             # 3: image file missing
        no_chain,                                       # 4: no reference chain (warning)
        _record("q1", 4134, question="Another?"),       # 5: id of record 1, different question
        _record("q6", 555),                             # 6: image is not an image
        _record("q1", 4134),                            # 7: id of record 1, same question (warning)
    ]
    (root / "train.json").write_text(json.dumps(records))
    (root / "test.json").write_text("[{\"question_id\": \"t\",,}]")  # malformed JSON
    cfg = DataConfig(source="annotated", annotated_dataset="aokvqa", train=root / "train.json",
                     test=root / "test.json", image_dir=root / "img", match_split=False)
    report = check_data(cfg)
    train = str(root / "train.json")
    got = [(p.file, p.line, p.field) for p in report.problems]
    assert got == [(train, 2, "question"), (train, 5, "question_id"), (train, 3, "image_id"),
                   (train, 6, "image_id"), (str(root / "test.json"), 1, None)]
    assert "image file not found" in report.problems[2].message and "'q3'" in report.problems[2].message
    assert "malformed JSON" in report.problems[4].message
    assert [(w.line, w.field) for w in report.warnings] == [(7, "question_id"), (4, "keys_filtered.Reasoning_level")]
    tr = report.splits[0]
    assert (tr.records, tr.rejected, tr.duplicate_ids, tr.examples, tr.bad_images, tr.without_chain) == \
        (7, 1, 2, 4, 2, 1)
    assert not report.ok()


def test_cli_exit_codes_and_output(good_folder, tmp_path):
    cfg = _config(good_folder)
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"data": cfg.model_dump(mode="json")}))
    runner = CliRunner()
    result = runner.invoke(app, ["check-data", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "dataset check" in result.output and "1 warnings" in result.output and "ok" in result.output
    assert runner.invoke(app, ["check-data", "-c", str(path), "--strict"]).exit_code == 1
    (good_folder / "coco" / "000000377368.jpg").unlink()
    result = runner.invoke(app, ["check-data", "-c", str(path)])
    assert result.exit_code == 1
    assert "1 problems" in result.output and "000000377368.jpg" in result.output and "line 1" in result.output


def test_jsonl_split_and_benchmark(tmp_path):
    sr, good = check_split(FIXTURES / "good.jsonl", "test", fmt="jsonl")
    assert sr.examples == len(good) > 0 and sr.bad_images == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text((FIXTURES / "good.jsonl").read_text().splitlines()[0] + "\n{\"id\": 3}\n")
    from mmboundary.data.check import DataReport

    report = DataReport()
    sr, good = check_split(bad, "test", fmt="jsonl", report=report)
    assert good == [] and [(p.line, p.file) for p in report.problems] == [(2, str(bad))]
    assert check_data(DataConfig()).note.startswith("data.source is 'benchmark'")


REAL = Path("/work/shared/reference/annotated")


@pytest.mark.skipif(not (REAL / "aokvqa_val_mmb.json").is_file(), reason="authors' files not present")
def test_authors_files_without_images(tmp_path):
    """The released files parse completely: the only problems are the absent images."""
    cfg = DataConfig(source="annotated", annotated_dataset="aokvqa", train=REAL / "aokvqa_val_mmb.json",
                     test=REAL / "aokvqa_val_mmb.json", image_dir=tmp_path, ood=REAL / "culturalvqa_mmb.json",
                     ood_annotated_dataset="culturalvqa", match_split=False)
    report = check_data(cfg)
    by = {s.split: s for s in report.splits}
    assert by["train"].records == 1152 and by["train"].duplicate_ids == 8 and by["train"].rejected == 0
    assert by["ood"].records == 800 and by["ood"].rejected == 0
    assert all("image file not found" in p.message for p in report.problems)
    # one line per example, after one saying that no image of the split was found
    assert len(report.problems) == 2 * by["train"].examples + by["ood"].examples + 3
    assert report.problems[0].message.startswith("none of the 1144 images can be used")


def _split_file(tmp_path: Path, n_train: int = 6, n_test: int = 4) -> Path:
    """A JSONL file holding two splits (its `split` fields), with unterminated reference steps."""
    image = str(IMAGES / "red.png")
    rows = [{"id": f"{split}-{i}", "image": image, "question": "What colour is the square?", "answers": ["red"],
             "chain": [{"text": "The square is red", "kind": "perception"},
                       {"text": "So the answer is red.", "kind": "reasoning"}], "split": split}
            for split, n in (("train", n_train), ("test", n_test)) for i in range(n)]
    path = tmp_path / "both.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_splits_are_read_as_the_data_stage_reads_them(tmp_path):
    """One JSONL file for train and test: each split keeps its own records (data.match_split), so
    no test id repeats a train id; with match_split off both read every record, and the repeat
    is reported under the split it concerns."""
    path = _split_file(tmp_path)
    report = check_data(DataConfig(source="jsonl", train=path, test=path))
    by = {s.split: s for s in report.splits}
    assert (by["train"].records, by["train"].examples, by["test"].examples) == (10, 6, 4)
    assert report.problems == [] and report.warnings == []
    assert (by["train"].unterminated, by["train"].reference_steps) == (6, 12)
    assert [(n.split, n.file) for n in report.notes] == [("train", str(path)), ("test", str(path))]
    assert str(report.notes[1]).startswith(f"[test] {path}: 4 of the 8 reference steps do not end in")
    report = check_data(DataConfig(source="jsonl", train=path, test=path, match_split=False))
    assert [s.examples for s in report.splits] == [10, 10]
    assert [(w.split, w.message[:30]) for w in report.warnings] == [("test", "10 test example id(s) also in ")]


def test_every_finding_names_its_split_and_file(tmp_path):
    """The same broken file as two splits: each problem is listed under each split, labelled."""
    path = _split_file(tmp_path)
    path.write_text(path.read_text() + "{\"id\": 3}\n")
    report = check_data(DataConfig(source="jsonl", train=path, test=path))
    assert [(p.split, p.file, p.line) for p in report.problems] == [("train", str(path), 11), ("test", str(path), 11)]
    assert str(report.problems[0]).startswith(f"[train] {path}, line 11, field 'id': ")
    missing = check_data(DataConfig(source="jsonl", train=path.with_name("gone.jsonl"), test=path))
    assert str(missing.problems[0]).startswith(f"[train] {path.with_name('gone.jsonl')}: dataset file not found")


def test_a_split_the_file_does_not_hold_is_a_problem(tmp_path):
    path = _split_file(tmp_path)
    report = check_data(DataConfig(source="jsonl", train=path, test=path, ood=path))
    assert [(p.split, p.message) for p in report.problems] == \
        [("ood", "no examples of split 'ood' (the file has splits ['test', 'train'])")]


@pytest.mark.skipif(not (REAL / "aokvqa_val_mmb.json").is_file(), reason="authors' files not present")
def test_released_aokvqa_file_unterminated_steps_are_reported(tmp_path):
    """`mmboundary check-data` on the authors' A-OKVQA file counts its unpunctuated steps and says
    what the pipeline does about them."""
    f = REAL / "aokvqa_val_mmb.json"
    result = CliRunner().invoke(app, ["check-data", "--set", "data.source=annotated", "--set", f"data.train={f}",
                                      "--set", f"data.test={f}", "--set", f"data.image_dir={tmp_path}",
                                      "--set", "data.match_split=false", "--no-prompts"])
    assert result.exit_code == 1  # the images are not there
    out = " ".join(result.output.split())
    assert f"[train] {f}: 3,110 of the 4,656 reference steps do not end in '.', '!' or '?'; the pipeline adds '.'" \
        in out
