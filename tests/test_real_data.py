"""Real datasets as users bring them (issue 20): reference chains in the authors' annotated format
whose steps lack final punctuation, as 3,110 of the 4,656 steps of the released A-OKVQA file do,
go through `data`, `base`, `estimate` and `sft_data` and keep one step per reference step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk

from _helpers import LOADER_FIXTURES, LOADER_IMAGES
from mmboundary import pipeline
from mmboundary.config import load_config
from mmboundary.data.jsonl import read_examples
from mmboundary.records import GeneratedChain
from mmboundary.runs import Run
from mmboundary.steps import as_sentence, ends_sentence, split_steps
from mmboundary.training.base import reference_response

FIXTURE = LOADER_FIXTURES / "aokvqa_unpunctuated.json"

#: The fixture's chains through data, base (a tiny VLM trained until it reproduces them), estimate
#: and sft_data, with the default signals and statements.
OVERRIDES = [
    "data.source=annotated", "data.annotated_dataset=aokvqa", f"data.train={FIXTURE}", f"data.test={FIXTURE}",
    f"data.image_dir={LOADER_IMAGES}", "data.match_split=false", "stages=[data,base,estimate,sft_data]",
    "base.vlm.max_steps=100", "base.vlm.batch_size=8", "base.vlm.lr=3e-3", "base.clip.max_steps=2",
    "base.clip.batch_size=8", "generation.max_new_tokens=64", "device=cpu", "estimate.splits=[train,test]",
]


@pytest.fixture(scope="module")
def unpunctuated_run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 1-core run is several times faster on a busy 2-core machine
    try:
        run = Run.open(tmp_path_factory.mktemp("real") / "r", load_config(None, OVERRIDES))
        pipeline.run_pipeline(run)
    finally:
        torch.set_num_threads(threads)
    return run


def _chains(path: Path) -> list[GeneratedChain]:
    return [GeneratedChain.model_validate_json(line) for line in path.read_text().splitlines()]


def test_fixture_has_the_released_files_unterminated_steps():
    records = json.loads(FIXTURE.read_text())
    steps = [s for r in records for k in ("Image_level", "Reasoning_level") for s in r["keys_filtered"][k]]
    assert sum(not ends_sentence(s) for s in steps) == len(steps) - 8  # all but one step per record


def test_steps_per_chain_survive_base_estimate_and_sft_data(unpunctuated_run):
    root = unpunctuated_run.root
    examples = {ex.id: ex for ex in read_examples(root / "data" / "train.jsonl")}
    raw = json.loads(FIXTURE.read_text())
    # the data stage keeps the steps as the file gives them; the training text ends each one
    assert [[s.text for s in ex.chain] for ex in examples.values()] == \
        [r["keys_filtered"]["Image_level"] + r["keys_filtered"]["Reasoning_level"] for r in raw]
    for ex in examples.values():
        assert [reference_response(ex)[s:e] for s, e in split_steps(reference_response(ex))] == \
            [as_sentence(st.text) for st in ex.chain]
    chains = _chains(root / "estimate" / "chains_train.jsonl")
    reproduced = [c for c in chains if c.text == reference_response(examples[c.example_id])]
    assert len(reproduced) >= len(chains) // 2, [c.text for c in chains]
    for c in reproduced:
        assert [s.text for s in c.steps] == [as_sentence(st.text) for st in examples[c.example_id].chain]
    steps = [json.loads(x) for x in (root / "estimate" / "steps_train.jsonl").read_text().splitlines()]
    per_chain = {c.example_id: sum(s["example_id"] == c.example_id for s in steps) for c in reproduced}
    assert per_chain == {c.example_id: len(examples[c.example_id].chain) for c in reproduced}
    # the SFT targets: a statement after every step, each step still a sentence of its own
    records = {r["example_id"]: r for r in load_from_disk(str(root / "sft_data" / "dataset")).to_list()}
    for c in reproduced:
        n = len(examples[c.example_id].chain)
        record = records[c.example_id]
        assert len(record["levels"]) == len(record["statements"]) == n
        assert len(split_steps(record["response"])) == n, record["response"]
    mean = sum(len(c.steps) for c in reproduced) / len(reproduced)
    assert mean == sum(len(examples[c.example_id].chain) for c in reproduced) / len(reproduced) > 4
