"""Settings of every test process, and the fixtures several test modules share (plain helpers:
tests/_helpers.py). A module that needs other data under one of these names defines its own
fixture, which takes precedence there (test_benchmark's and test_rl's `examples`)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MMBOUNDARY_PROGRESS", "0")


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """Three train examples of the built-in benchmark (scenes, images, reference chains)."""
    from mmboundary.data.benchmark import BenchmarkSpec, generate_examples

    spec = BenchmarkSpec.version("v1", n_train=3, n_test=0, n_ood=0)
    return generate_examples(spec, "train", tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`_helpers.build_tiny_run`: (root, examples) of a run with complete base (vanilla model),
    estimate (normaliser, levels) and sft stages."""
    from _helpers import build_tiny_run

    return build_tiny_run(tmp_path_factory.mktemp("run") / "r", tmp_path_factory.mktemp("run-images"))
