"""Benchmark v2: visibility levels, object steps, and v1 kept as a named config."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmboundary.config import load_config
from mmboundary.data.benchmark import BenchmarkSpec, check_step, claim_type, generate_benchmark, generate_examples
from mmboundary.data.benchmark.captions import caption_sentences, object_sentences
from mmboundary.data.benchmark.language import ObjectClaim, parse_claim, render_claim
from mmboundary.data.benchmark.scenes import add_noise, draw_scene, faded
from mmboundary.data.benchmark.spec import VisibilityLevel
from mmboundary.records import Example, Scene, SceneObject, StepKind

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "configs" / "benchmark-v1.yaml"
V2 = ROOT / "configs" / "benchmark-v2.yaml"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_v1_config_draws_what_benchmark_v1_drew(tmp_path):
    # digest of the files written by the generator before v2 existed (commit 37b8dbb), same sizes
    spec = load_config(V1).data.benchmark.model_copy(update={"n_train": 40, "n_test": 30, "n_ood": 30})
    assert spec.name == "v1" and not spec.graded and not spec.list_objects
    generate_benchmark(spec, tmp_path, progress=False)
    assert _digest(tmp_path) == "e0fe7333f907b2676cca765b2b8eff282267ef4a08b91938a5513e1a03e776a0"


def test_the_default_is_v2_and_v1_is_a_named_version():
    assert BenchmarkSpec() == load_config(V2).data.benchmark == load_config(None).data.benchmark
    assert BenchmarkSpec.version("v1") == load_config(V1).data.benchmark
    assert not BenchmarkSpec.version("v1").graded
    with pytest.raises(ValueError, match="unknown benchmark version 'v3'"):
        BenchmarkSpec.version("v3")
    # the built-in default run config is configs/default.yaml, v2 with its name
    default, v2_file = load_config(None), load_config(V2)
    assert default.model_dump() == load_config(ROOT / "configs" / "default.yaml").model_dump()
    assert default.model_copy(update={"name": v2_file.name}).model_dump() == v2_file.model_dump()
    draft = load_config(V2).data.benchmark
    assert draft.graded and draft.list_objects and draft.n_test >= 2000 and draft.n_ood >= 2000
    assert max(draft.ood_levels) > max(draft.levels)  # OOD beyond the in-domain visibility range


def test_v2_is_frozen(tmp_path):
    """v2 (configs/benchmark-v2.yaml) was frozen on 2026-12-03 with its vanilla properties
    (docs/benchmark.md): its generator output may not change. A change is a new named version."""
    spec = load_config(V2).data.benchmark
    assert spec.name == "v2" and (spec.n_train, spec.n_test, spec.n_ood) == (6000, 2000, 2000)
    assert [v.blur for v in spec.visibility] == [0.0, 6.0, 12.0, 24.0, 28.0, 32.0]
    assert "spatial" not in spec.question_types
    generate_benchmark(spec.model_copy(update={"n_train": 24, "n_test": 12, "n_ood": 12}), tmp_path, progress=False)
    assert _digest(tmp_path) == "869af7e68004e95ed821996c77db9a43daf10f42aeb97fc1049397d2a3996164"


#: A graded spec with every factor: contrast, blur and noise.
GRADED = BenchmarkSpec(
    seed=5, n_train=0, n_test=400, n_ood=300, list_objects=True, levels=(0, 1, 2), ood_levels=(2, 3),
    visibility=(VisibilityLevel(), VisibilityLevel(contrast=0.6, blur=1.0), VisibilityLevel(noise=30.0),
                VisibilityLevel(contrast=0.3, blur=2.0, noise=50.0)))


@pytest.fixture(scope="module")
def v2(tmp_path_factory) -> dict[str, list[Example]]:
    root = tmp_path_factory.mktemp("v2")
    return {split: generate_examples(GRADED, split, root / split) for split in ("test", "ood")}


def test_every_scene_records_its_level_drawn_uniformly(v2):
    spec = GRADED
    for split, exs in v2.items():
        levels = collections.Counter(e.scene.difficulty.level for e in exs)
        assert set(levels) == set(spec.split_levels(split))
        expected = len(exs) / len(levels)
        assert all(abs(n - expected) < 0.35 * expected for n in levels.values())
        for e in exs:
            d = e.scene.difficulty
            vis = spec.visibility[d.level]
            assert (d.contrast, d.noise, d.blur) == (vis.contrast, vis.noise, vis.blur)
    seeds = [e.scene.difficulty.noise_seed for e in v2["test"] if e.scene.difficulty.noise > 0]
    assert len(set(seeds)) == len(seeds)  # every noisy image has its own noise


def test_the_record_draws_its_image(v2):
    for e in v2["test"][:40] + v2["ood"][:40]:
        assert list(Image.open(e.image).getdata()) == list(draw_scene(e.scene).getdata())


def test_chains_start_with_one_true_object_step_per_object(v2):
    for e in v2["test"][:100]:
        k = len(e.scene.objects)
        head = e.chain[:k]
        assert all(s.kind == StepKind.perception and claim_type(s.text) == "object" for s in head)
        assert claim_type(e.chain[k].text) != "object"
        assert all(check_step(s.text, e) for s in e.chain)
        assert [s.text for s in head] == object_sentences(e.scene)
        assert " ".join(caption_sentences(e.scene, ("red", "green", "blue", "yellow"), objects=True)).startswith(
            " ".join(s.text for s in head))


def test_object_claims_read_back_and_are_checked_against_the_cell():
    obj = SceneObject(shape="circle", color="red", size="large", column="left", row="top")
    centre = SceneObject(shape="square", color="blue", size="small", column="middle", row="center")
    scene = Scene(objects=(obj, centre))
    ex = Example(id="x", image=Path("/x.png"), question="q", answers=("1",), scene=scene)
    assert render_claim(ObjectClaim(row="top", column="left", size="large", color="red", shape="circle")) \
        == "At the top left there is a large red circle."
    assert object_sentences(scene)[1] == "In the center there is a small blue square."
    for text, truth in [
        ("At the top left there is a large red circle.", True),
        ("at the top left, there is a big red circle", True),
        ("At the top left there is a small red circle.", False),  # wrong size
        ("At the top left there is a large blue circle.", False),  # wrong colour
        ("At the top middle there is a large red circle.", False),  # wrong cell
        ("In the center there is a small blue square.", True),
        ("In the middle there is a small blue square.", True),
        ("At the bottom right there is a small blue square.", False),  # empty cell
    ]:
        assert parse_claim(text) is not None, text
        assert check_step(text, ex) is truth, text


def test_faded_colour_and_noise_by_hand():
    # background + contrast x (colour - background), rounded half to even
    assert faded((220, 30, 30), (255, 255, 255), 0.5) == (238, 142, 142)
    assert faded((220, 30, 30), (255, 255, 255), 1.0) == (220, 30, 30)
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    assert add_noise(grey, 0.0, 1) is grey
    noisy = np.asarray(add_noise(grey, 20.0, 1), dtype=float) - 128
    assert abs(noisy.mean()) < 1.0 and 19.0 < noisy.std() < 21.0
    assert np.array_equal(np.asarray(add_noise(grey, 20.0, 1)), np.asarray(add_noise(grey, 20.0, 1)))


def test_a_level_index_outside_the_visibility_table_is_refused():
    with pytest.raises(ValueError, match="ood_levels"):
        BenchmarkSpec(visibility=(VisibilityLevel(), VisibilityLevel(contrast=0.5, noise=10)), ood_levels=(2,))
