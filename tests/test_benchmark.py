"""The built-in benchmark: generator, language, checker, annotated export."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from mmboundary.data.benchmark import (
    QUESTION_TYPES,
    ArithmeticClaim,
    AttributeClaim,
    BenchmarkSpec,
    ComparisonClaim,
    CountClaim,
    FinalClaim,
    ObjectRef,
    SpatialClaim,
    check_step,
    draw_scene,
    export_annotated,
    extract_answer,
    generate_benchmark,
    generate_examples,
    parse_claim,
    question_type,
    render_claim,
)
from mmboundary.data.benchmark.language import COLOR_RGB, describe
from mmboundary.data.benchmark.scenes import BACKGROUND_RGB
from mmboundary.errors import DataError
from mmboundary.records import Example, ReferenceStep, Scene, SceneObject, StepKind

SMALL = BenchmarkSpec.version("v1", seed=3, n_train=120, n_test=40, n_ood=80)
NUMBER_WORD = "zero one two three four five six seven eight nine ten".split()


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, list[Example]]:
    root = tmp_path_factory.mktemp("bench")
    spec = BenchmarkSpec.version("v1", seed=1, n_train=200, n_test=80, n_ood=200, list_objects=False)  # chains as in v1
    return {split: generate_examples(spec, split, root / split) for split in ("train", "test", "ood")}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- Generator ----------------------------------------------------------------------------------

def test_generation_is_deterministic_and_seed_dependent(tmp_path):
    a = generate_benchmark(SMALL, tmp_path / "a", progress=False)
    generate_benchmark(SMALL, tmp_path / "b", progress=False)
    generate_benchmark(SMALL.model_copy(update={"seed": 4}), tmp_path / "c", progress=False)
    fa, fb, fc = (_files(tmp_path / x) for x in "abc")
    assert set(a) == {"train", "test", "ood"}
    assert all(p.exists() and p.parent == tmp_path / "a" for p in a.values())
    assert len([k for k in fa if k.endswith(".png")]) == 240
    assert fa == fb
    assert fa["train.jsonl"] != fc["train.jsonl"] and fa["ood.jsonl"] != fc["ood.jsonl"]
    assert sum(fa[k] != fc[k] for k in fa if k.endswith(".png")) > 100


def test_jsonl_records(tmp_path):
    paths = generate_benchmark(SMALL, tmp_path, progress=False)
    lines = paths["test"].read_text().splitlines()
    assert len(lines) == SMALL.n_test
    first = json.loads(lines[0])
    assert first["id"] == "test-000000" and first["split"] == "test"
    assert first["image"] == "images/test/test-000000.png"
    assert (tmp_path / first["image"]).exists()
    assert first["scene"]["objects"] and "choices" not in first
    assert all(step["truth"] is True for step in first["chain"])
    ex = Example.model_validate({**first, "image": tmp_path / first["image"]})
    assert ex.scene is not None


def test_splits_and_ids(examples):
    for split, exs in examples.items():
        assert [e.id for e in exs] == [f"{split}-{i:06d}" for i in range(len(exs))]
        assert all(e.split == split and e.scene is not None and e.image.exists() for e in exs)
        assert all(e.image.is_absolute() for e in exs)


def test_ood_split_differs(examples):
    spec = SMALL
    held = set(spec.held_out_pairs)
    for split in ("train", "test"):
        for e in examples[split]:
            assert 2 <= len(e.scene.objects) <= 5
            assert e.scene.background == "white"
            assert not {(o.color, o.shape) for o in e.scene.objects} & held
    sizes = collections.Counter(len(e.scene.objects) for e in examples["ood"])
    assert set(sizes) == {5, 6, 7, 8}
    for e in examples["ood"]:
        assert e.scene.background == "light grey"
        assert {(o.color, o.shape) for o in e.scene.objects} & held
    seen = {(o.color, o.shape) for e in examples["ood"] for o in e.scene.objects}
    assert held <= seen
    clear = lambda e: draw_scene(Scene(objects=e.scene.objects, background=e.scene.background))  # noqa: E731
    assert clear(examples["ood"][0]).getpixel((0, 0)) == BACKGROUND_RGB["light grey"]
    assert clear(examples["train"][0]).getpixel((0, 0)) == (255, 255, 255)


def test_images_show_the_scene(examples):
    cols, rows = {"left": 0, "middle": 1, "right": 2}, {"top": 0, "center": 1, "bottom": 2}
    for e in examples["train"][:50] + examples["ood"][:50]:
        stored = Image.open(e.image)
        assert stored.size == (48, 48) and stored.mode == "RGB"
        assert list(stored.getdata()) == list(draw_scene(e.scene).getdata())  # the record draws the image
        image = draw_scene(Scene(objects=e.scene.objects, background=e.scene.background))  # without its noise
        occupied = {}
        for o in e.scene.objects:
            occupied[(cols[o.column], rows[o.row])] = COLOR_RGB[o.color]
        for c in range(3):
            for r in range(3):
                centre = image.getpixel((c * 16 + 8, r * 16 + 9))
                assert centre == occupied.get((c, r), BACKGROUND_RGB[e.scene.background])
    large = Scene(objects=(SceneObject(shape="square", color="red", size="large", column="left", row="top"),))
    small = Scene(objects=(SceneObject(shape="square", color="red", size="small", column="left", row="top"),))
    count_red = lambda im: sum(px == COLOR_RGB["red"] for px in im.getdata())  # noqa: E731
    assert count_red(draw_scene(large)) > 2.5 * count_red(draw_scene(small)) > 0
    assert draw_scene(large, image_size=96).size == (96, 96)
    filled = {}
    for shape in ("square", "circle", "triangle"):
        one = Scene(objects=(SceneObject(shape=shape, color="blue", size="large", column="middle", row="center"),))
        filled[shape] = sum(px == COLOR_RGB["blue"] for px in draw_scene(one, image_size=96).getdata())
    side = round(32 * 0.85)
    assert filled["square"] == side * side
    assert 0.7 < filled["circle"] / side**2 < 0.85
    assert 0.4 < filled["triangle"] / side**2 < 0.6


def test_chain_structure(examples):
    for exs in examples.values():
        for e in exs:
            assert 2 <= len(e.chain) <= 6
            kinds = [s.kind for s in e.chain]
            first_reasoning = kinds.index(StepKind.reasoning)
            assert all(k == StepKind.perception for k in kinds[:first_reasoning])
            assert all(k == StepKind.reasoning for k in kinds[first_reasoning:])
            assert first_reasoning >= 1
            assert all(s.truth is True and s.text.endswith(".") for s in e.chain)
            assert e.chain[-1].text == f"So the answer is {e.answers[0]}."
            assert len(e.answers) == 1 and e.choices is None
            assert extract_answer(" ".join(s.text for s in e.chain)) == e.answers[0]


def test_question_type_coverage_and_balance(examples):
    expected_steps = {"count_color": 2, "color_of_shape": 3, "compare_colors": 4, "sum_colors": 4,
                      "diff_shapes": 4, "spatial": 4, "most_color": 5, "total": 6}
    for split, exs in examples.items():
        types = collections.Counter(question_type(e.question) for e in exs)
        assert set(types) == set(QUESTION_TYPES), split
        assert max(types.values()) - min(types.values()) <= 1
        for e in exs:
            assert len(e.chain) == expected_steps[question_type(e.question)]
        yes_no = collections.Counter(e.answers[0] for e in exs
                                     if question_type(e.question) in ("compare_colors", "spatial"))
        assert set(yes_no) == {"yes", "no"} and abs(yes_no["yes"] - yes_no["no"]) <= 2
    answers = collections.Counter(e.answers[0] for e in examples["train"])
    assert len(answers) >= 8  # numbers, colours, yes/no


def test_spec_validation():
    with pytest.raises(ValidationError):
        BenchmarkSpec(n_trian=5)
    with pytest.raises(ValidationError):
        BenchmarkSpec(colors=("red", "mauve"))
    with pytest.raises(ValidationError):
        BenchmarkSpec(min_objects=6, max_objects=5)
    with pytest.raises(ValidationError):
        BenchmarkSpec(held_out_pairs=(("pink", "circle"),))
    assert BenchmarkSpec().n_train == 6000 and BenchmarkSpec.version("v1").n_train == 2000
    assert ("yellow", "triangle") not in BenchmarkSpec().allowed_pairs(ood=False)
    assert ("yellow", "triangle") in BenchmarkSpec().allowed_pairs(ood=True)


def test_question_type_subset(tmp_path):
    spec = BenchmarkSpec.version("v1", n_train=10, question_types=("spatial",))
    exs = generate_examples(spec, "train", tmp_path)
    assert {question_type(e.question) for e in exs} == {"spatial"}


# --- Checker: reference steps are true ----------------------------------------------------------

def test_every_reference_step_is_true(examples):
    n = 0
    for exs in examples.values():
        for e in exs:
            for step in e.chain:
                assert check_step(step.text, e), (e.id, step.text)
                claim = parse_claim(step.text)
                assert render_claim(claim) == step.text
                n += 1
    assert n > 1500


# --- Checker: a fixed scene ---------------------------------------------------------------------

def _o(shape, color, size, column, row):
    return SceneObject(shape=shape, color=color, size=size, column=column, row=row)


FIXED = Example(
    id="fixed", image=Path("/nonexistent.png"), question="How many red objects are there?",
    answers=("2",), split="test",
    scene=Scene(objects=(
        _o("circle", "red", "large", "left", "top"),
        _o("circle", "green", "large", "right", "top"),
        _o("square", "blue", "small", "right", "center"),
        _o("triangle", "red", "small", "middle", "bottom"),
    )),
)

TRUE_SENTENCES = [
    "There are 2 red objects.", "There is 1 blue object.", "There are no yellow objects.",
    "There are 2 circles.", "There is 1 square.", "There are 4 objects in total.",
    "There are 2 large objects.", "There is 1 large red circle.", "There is 1 red circle.",
    "The square is blue.", "The red circle is large.", "The blue square is on the right.",
    "The red circle is at the top.", "The triangle is in the middle.", "The square is in the center.",
    "The triangle is at the bottom.", "The green object is on the right.",
    "The red circle is left of the green circle.", "The green circle is right of the red triangle.",
    "The red circle is above the blue square.", "The red triangle is below the green circle.",
    "2 plus 3 is 5.", "3 minus 1 is 2.", "2 plus 1 plus 2 is 5.", "2 is more than 1.",
    "1 is less than 3.", "2 is equal to 2.", "3 is more than 2 and 1.", "So the answer is 2.",
    # paraphrases
    "I can see 2 red objects.", "I see 2 red objects.", "The number of red objects is 2.",
    "There are two red things.", "there   are TWO red objects", "There is 2 red object.",
    "There's one blue square.", "The image contains 2 circles.", "I count four shapes.",
    "In total, there are 4 objects.", "The total number of objects is 4.",
    "There are 4 objects altogether.", "Two circles are visible.", "There are zero yellow items.",
    "There is no yellow object.", "The blue square is in the right column.",
    "The red circle is in the top row.", "The square is in the center row.",
    "The square is in the middle row.", "The triangle is in the middle column.",
    "The triangle is in the center column.", "The blue square is on the right side.",
    "The colour of the square is blue.", "The color of the square is blue.",
    "The square's color is blue.", "The square is blue in colour.", "The square is colored blue.",
    "The red circle is big.", "The size of the blue square is small.", "The triangle is little.",
    "The red circle is to the left of the green circle.", "The red circle is on the left of the blue square.",
    "The red circle is over the red triangle.", "The red triangle is under the red circle.",
    "The blue square is lower than the green circle.", "The blue square is beneath the green circle.",
    "2 + 3 = 5", "3 - 1 = 2", "two plus three equals five.", "2 plus 3 makes 5.",
    "The sum of 2, 1 and 2 is 5.", "The difference between 3 and 1 is 2.",
    "2 is greater than 1.", "1 is fewer than 3.", "2 is the same as 2.", "2 equals 2.",
    "3 is larger than 2, 1 and 0.", "2 is not more than 3.", "3 is not equal to 2.",
    "So, the answer is 2.", "The answer is two.", "Therefore the answer is 2",
    "Thus, the answer is 2!", "So the final answer is 2.", "so the answer is 2 ..",
]

FALSE_SENTENCES = [
    "There are 3 red objects.", "There is 1 red object.", "There are no blue objects.",
    "There are 3 circles.", "There are 5 objects in total.", "There is 1 yellow object.",
    "The square is red.", "The red circle is small.", "The blue square is on the left.",
    "The red circle is at the bottom.", "The triangle is on the right.",
    "The circle is red.",  # two circles: "the circle" is not unique
    "The yellow square is on the right.",  # no such object
    "The red object is on the left.",  # two red objects
    "The red circle is right of the green circle.", "The green circle is left of the red triangle.",
    "The red circle is below the blue square.", "The red circle is above the green circle.",
    "The red circle is left of the red circle.", "The green circle is left of the blue square.",
    "The blue square is right of the green circle.", "The green circle is above the red circle.",
    "The red circle is below the green circle.",
    "2 plus 3 is 6.", "3 minus 1 is 1.", "2 plus 1 plus 2 is 4.", "1 is more than 2.",
    "3 is less than 1.", "2 is equal to 3.", "3 is more than 2 and 3.", "2 is not more than 1.",
    "So the answer is 3.", "So the answer is red.", "So the answer is yes.",
    "I see 3 red objects.", "The number of squares is 2.", "There are two blue things.",
    "The colour of the square is green.", "The blue square is in the left column.",
    "The red circle is in the bottom row.", "The red circle is big in size and small.",
]

UNPARSEABLE = [
    "", "   ", ".", "Hello world.", "The red circle is happy.", "There are 2 red objects and 1 blue object.",
    "red", "2 plus is 3.", "The red circle is left of.", "So the answer is.", "There are many red objects.",
    "The red blue circle is large.", "The large small square is blue.", "3 is not more than 2 and 1.",
    "The image shows a baseball game.", "There are 2 purple dogs.", "2 plus 3.",
    "So the answer is 2, with total certainty and more text",
]


@pytest.mark.parametrize("sentence", TRUE_SENTENCES)
def test_true_sentences(sentence):
    assert parse_claim(sentence) is not None, sentence
    assert check_step(sentence, FIXED) is True


@pytest.mark.parametrize("sentence", FALSE_SENTENCES)
def test_false_sentences(sentence):
    assert check_step(sentence, FIXED) is False


@pytest.mark.parametrize("sentence", UNPARSEABLE)
def test_unparseable_sentences(sentence):
    if sentence.startswith("So the answer is 2,"):
        assert check_step(sentence, FIXED) is False  # parses, but the answer is not "2"
        return
    assert parse_claim(sentence) is None, parse_claim(sentence)
    assert check_step(sentence, FIXED) is False


def test_parsed_claims_are_typed():
    assert parse_claim("There are two red things.") == CountClaim(of=ObjectRef(color="red"), n=2)
    assert parse_claim("There are 4 objects in total.") == CountClaim(n=4)
    assert parse_claim("The big blue square is in the left column.") == AttributeClaim(
        subject=ObjectRef(size="large", color="blue", shape="square"), attribute="column", value="left")
    assert parse_claim("The square is in the center.") == AttributeClaim(
        subject=ObjectRef(shape="square"), attribute="row", value="center")
    assert parse_claim("The red circle is to the right of the square.") == SpatialClaim(
        subject=ObjectRef(color="red", shape="circle"), relation="right_of", other=ObjectRef(shape="square"))
    assert parse_claim("2 plus 1 minus 3 is 0.") == ArithmeticClaim(terms=(2, 1, 3), ops=("plus", "minus"), result=0)
    assert parse_claim("3 is more than 2 and 1.") == ComparisonClaim(left=3, relation="more", right=(2, 1))
    assert parse_claim("So the answer is Three.") == FinalClaim(answer="3")
    assert parse_claim("So the answer is YES") == FinalClaim(answer="yes")


def test_claims_without_a_scene():
    no_scene = FIXED.model_copy(update={"scene": None})
    assert check_step("2 plus 3 is 5.", no_scene) is True
    assert check_step("So the answer is two.", no_scene) is True
    assert check_step("Not a claim.", no_scene) is False
    with pytest.raises(DataError):
        check_step("There are 2 red objects.", no_scene)


# --- Checker: planted false steps over generated examples ---------------------------------------

def _other(values, current):
    return next(v for v in values if v != current)


def _falsify(claim, example: Example):
    """Claims made false from a true claim: a changed number, colour, side, relation, answer."""
    out = []
    if isinstance(claim, CountClaim):
        out.append(claim.model_copy(update={"n": claim.n + 1}))
        if claim.n > 0:
            out.append(claim.model_copy(update={"n": claim.n - 1}))
    elif isinstance(claim, AttributeClaim):
        values = {"color": list(COLOR_RGB), "size": ["small", "large"],
                  "column": ["left", "middle", "right"], "row": ["top", "center", "bottom"]}
        for v in values[claim.attribute]:
            if v != claim.value:
                out.append(claim.model_copy(update={"value": v}))
    elif isinstance(claim, SpatialClaim):
        opposite = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}
        out.append(claim.model_copy(update={"relation": opposite[claim.relation]}))
        out.append(claim.model_copy(update={"other": claim.subject}))
    elif isinstance(claim, ArithmeticClaim):
        out.append(claim.model_copy(update={"result": claim.result + 1}))
        out.append(claim.model_copy(update={"terms": (claim.terms[0] + 1,) + claim.terms[1:]}))
    elif isinstance(claim, ComparisonClaim):
        if claim.relation == "equal":
            out.append(claim.model_copy(update={"relation": "more"}))
            out.append(claim.model_copy(update={"relation": "less"}))
        else:
            flip = {"more": "less", "less": "more"}[claim.relation]
            out.append(claim.model_copy(update={"relation": flip}))
            out.append(claim.model_copy(update={"relation": "equal"}))
            out.append(claim.model_copy(update={"negated": True}))
    elif isinstance(claim, FinalClaim):
        a = claim.answer
        if a.isdigit():
            out.append(FinalClaim(answer=str(int(a) + 1)))
        elif a in ("yes", "no"):
            out.append(FinalClaim(answer=_other(["yes", "no"], a)))
        else:
            out.append(FinalClaim(answer=_other(list(COLOR_RGB), a)))
    return out


def test_planted_false_steps_are_caught(examples):
    caught = collections.Counter()
    for exs in examples.values():
        for e in exs:
            for step in e.chain:
                claim = parse_claim(step.text)
                for wrong in _falsify(claim, e):
                    text = render_claim(wrong)
                    assert check_step(text, e) is False, (e.id, step.text, text)
                    caught[claim.type] += 1
    assert set(caught) == {"count", "attribute", "spatial", "arithmetic", "comparison", "final"}
    assert sum(caught.values()) > 2000


def test_planted_text_edits_are_caught(examples):
    """Edits on the sentence text itself, as a model would make them."""
    n = 0
    for e in examples["train"] + examples["ood"]:
        for step in e.chain:
            t = step.text
            if m := re.fullmatch(r"There (?:is|are) (\d+) (.*)\.", t):
                edited = f"There are {int(m.group(1)) + 2} {m.group(2)}."
            elif " is on the left." in t:
                edited = t.replace("on the left", "on the right")
            elif " left of " in t:
                edited = t.replace(" left of ", " right of ")
            elif " above " in t:
                edited = t.replace(" above ", " below ")
            elif m := re.fullmatch(r"(.*) is (\d+)\.", t):
                edited = f"{m.group(1)} is {int(m.group(2)) + 1}."
            elif t == "So the answer is yes.":
                edited = "So the answer is no."
            else:
                continue
            assert check_step(edited, e) is False, (t, edited)
            n += 1
    assert n > 300


# --- Checker: true paraphrases over generated examples ------------------------------------------

def _paraphrases(claim) -> list[str]:
    if isinstance(claim, CountClaim):
        n, word = claim.n, NUMBER_WORD[claim.n]
        things = describe(claim.of, plural=True).replace("objects", "things")
        plural = describe(claim.of, plural=True)
        return [f"I can see {n} {plural}.", f"I see {word} {plural}", f"The number of {plural} is {n}.",
                f"there are {word} {things}", f"  THERE ARE   {n}  {plural} "]
    if isinstance(claim, AttributeClaim):
        subject = f"the {describe(claim.subject)}"
        if claim.attribute == "column":
            return [f"{subject.capitalize()} is in the {claim.value} column."]
        if claim.attribute == "row":
            return [f"{subject.capitalize()} is in the {claim.value} row."]
        if claim.attribute == "color":
            return [f"The colour of {subject} is {claim.value}.", f"{subject} is {claim.value} in color"]
        return [f"The size of {subject} is {claim.value}."]
    if isinstance(claim, SpatialClaim):
        text = render_claim(claim)
        return [text.replace(" left of ", " to the left of ").replace(" right of ", " to the right of ")]
    if isinstance(claim, ArithmeticClaim):
        return [render_claim(claim).replace(" plus ", " + ").replace(" minus ", " - ").replace(" is ", " = ")]
    if isinstance(claim, ComparisonClaim):
        return [render_claim(claim).replace("more than", "greater than").replace("less than", "fewer than")]
    return [f"So, the answer is {claim.answer}", f"The answer is {claim.answer}."]


def test_true_paraphrases_are_accepted(examples):
    n = 0
    for exs in examples.values():
        for e in exs[:100]:
            for step in e.chain:
                for text in _paraphrases(parse_claim(step.text)):
                    assert check_step(text, e) is True, (e.id, step.text, text)
                    n += 1
    assert n > 500


# --- Answers ------------------------------------------------------------------------------------

def test_extract_answer():
    assert extract_answer("There are 2 red objects. So the answer is 2.") == "2"
    assert extract_answer("So the answer is 2, with total certainty. So the answer is Three, "
                          "but I'm not sure.") == "3"
    assert extract_answer("so, the answer is Yes!") == "yes"
    assert extract_answer("The answer is red") == "red"
    assert extract_answer("There are 2 red objects.") is None
    assert extract_answer("So the answer is .") is None
    assert extract_answer("") is None


# --- Annotated export ---------------------------------------------------------------------------

def test_export_annotated_round_trip(examples, tmp_path):
    exs = examples["test"][:30]
    path = tmp_path / "out" / "annotated.json"
    assert export_annotated(exs, path) == 30
    records = json.loads(path.read_text())
    assert isinstance(records, list) and len(records) == 30
    for rec, e in zip(records, exs):
        assert rec["question_id"] == e.id and rec["question"] == e.question
        assert rec["direct_answers"] == list(e.answers)
        assert "choices" not in rec
        assert set(rec["keys_filtered"]) == {"Image_level", "Reasoning_level"}
        assert rec["keys"] == rec["keys_filtered"]
        perception = [s.text for s in e.chain if s.kind == StepKind.perception]
        reasoning = [s.text for s in e.chain if s.kind == StepKind.reasoning]
        assert [t + "." for t in rec["keys_filtered"]["Image_level"]] == perception
        assert [t + "." for t in rec["keys_filtered"]["Reasoning_level"]] == reasoning
        assert rec["keys_filtered"]["Reasoning_level"][-1] == f"So the answer is {e.answers[0]}"
        assert (path.parent / rec["image"]).resolve() == e.image.resolve()
        # the exported steps are still true sentences
        assert all(check_step(t, e) for level in rec["keys_filtered"].values() for t in level)
    export_annotated(exs[:2], path, strip_periods=False)
    kept = json.loads(path.read_text())
    assert kept[0]["keys"]["Reasoning_level"][-1].endswith(".")


def test_export_annotated_multiple_choice(tmp_path):
    ex = Example(id="mc", image=tmp_path / "x.png", question="Pick one?", choices=("a", "b", "c"),
                 answers=("b",), chain=(ReferenceStep(text="So the answer is b.", kind=StepKind.reasoning),))
    export_annotated([ex], tmp_path / "mc.json")
    rec = json.loads((tmp_path / "mc.json").read_text())[0]
    assert rec["choices"] == ["a", "b", "c"] and rec["correct_choice_idx"] == 1
    assert rec["keys"]["Image_level"] == [] and rec["keys"]["Reasoning_level"] == ["So the answer is b"]


def test_export_annotated_reads_back_with_the_project_loader(examples, tmp_path):
    annotated = pytest.importorskip("mmboundary.data.annotated")
    read = getattr(annotated, "read_annotated", None)
    if read is None:
        pytest.skip("no annotated-format loader")
    exs = examples["ood"][:20]
    export_annotated(exs, tmp_path / "bench.json")
    back = read(tmp_path / "bench.json", None)
    assert [b.id for b in back] == [e.id for e in exs]
    for b, e in zip(back, exs):
        assert b.image.resolve() == e.image.resolve() and b.question == e.question
        assert b.answers == e.answers
        assert [(s.text + ".", s.kind) for s in b.chain] == [(s.text, s.kind) for s in e.chain]


def test_captions_are_true_claims_and_count_everything(tmp_path):
    from mmboundary.data.benchmark import caption_sentences

    spec = BenchmarkSpec.version("v1", n_train=40, n_test=2, n_ood=2)
    for ex in generate_examples(spec, "train", tmp_path):
        sentences = caption_sentences(ex.scene, spec.colors)
        assert len(sentences) == len(spec.colors) + 3 + 1
        assert all(check_step(s, ex) for s in sentences), sentences
        assert sentences[-1] == f"There are {len(ex.scene.objects)} objects in total."
