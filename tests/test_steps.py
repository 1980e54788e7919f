import json
from pathlib import Path

import pytest

from mmboundary.steps import as_sentence, ends_sentence, split_sentences, split_steps


def test_simple_sentences():
    text = "There are 2 red objects. 2 plus 1 is 3. So the answer is 3."
    assert split_sentences(text) == ["There are 2 red objects.", "2 plus 1 is 3.", "So the answer is 3."]


def test_spans_index_the_original_text():
    text = "  A cat sits.   Is it black?  Yes!"
    spans = split_steps(text)
    assert spans == [(2, 13), (16, 28), (30, 34)]
    assert [text[s:e] for s, e in spans] == ["A cat sits.", "Is it black?", "Yes!"]


def test_decimals_abbreviations_and_list_numbers_do_not_split():
    text = "1. The bar is 3.5 cm long, e.g. a pencil. 2. It costs approx. 4 dollars."
    assert split_sentences(text) == ["1. The bar is 3.5 cm long, e.g. a pencil.", "2. It costs approx. 4 dollars."]


def test_trailing_fragment_is_a_step_and_empty_text_has_none():
    assert split_sentences("One step. And an unfinished") == ["One step.", "And an unfinished"]
    assert split_steps("") == []
    assert split_steps("   \n ") == []


def test_closing_quotes_stay_with_their_sentence():
    assert split_sentences('He said "yes." Then he left.') == ['He said "yes."', "Then he left."]


# --- real reference chains: the boundary rule and the splitter on the released files' patterns ---

#: Step endings of the authors' released files (A-OKVQA, CulturalVQA) and what the rule makes of them.
RELEASED_PATTERNS = [
    ("The image features a birthday cake with the number 30 on it",  # a word
     "The image features a birthday cake with the number 30 on it."),
    ("The clock shows the time as 17:05", "The clock shows the time as 17:05."),  # a number
    ("So the answer is 1000", "So the answer is 1000."),
    ("The sign reads 'Pedestrian Zone'", "The sign reads 'Pedestrian Zone'."),  # a quote
    ('a sign that reads "LEARNER MODELS NEW & USED"', 'a sign that reads "LEARNER MODELS NEW & USED".'),
    ("a banner that reads \u201cHAPPY 30TH BIRTHDAY\u201d", "a banner that reads \u201cHAPPY 30TH BIRTHDAY\u201d."),
    ("So the answer is beverage (soda)", "So the answer is beverage (soda)."),  # a closing parenthesis
    ("The time displayed on the clock is 5:05 PM", "The time displayed on the clock is 5:05 PM."),  # abbreviations
    ("It is registered in the United Kingdom, not the USA", "It is registered in the United Kingdom, not the USA."),
    ("The trucks help with passengers etc", "The trucks help with passengers etc."),
    ("The uniforms display the word 'Ft. Spokane.'", "The uniforms display the word 'Ft. Spokane.'."),  # mark inside
    ("Canada Day is celebrated annually on July 1st", "Canada Day is celebrated annually on July 1st."),
]
#: Steps that end in a final mark: byte for byte unchanged.
TERMINATED = ["There are 2 red objects.", "Is it raining?", "Yes!", "So, the answer is absolutely no.",
              "The person likes using a mug to hold their pens, etc.", "Wait...", "It is 3.5 cm long. "]


@pytest.mark.parametrize("step, sentence", RELEASED_PATTERNS)
def test_boundary_rule_on_the_released_files_patterns(step, sentence):
    assert not ends_sentence(step)
    assert as_sentence(step) == sentence and as_sentence(sentence) == sentence
    assert split_sentences(sentence) == [sentence]


@pytest.mark.parametrize("step", TERMINATED)
def test_boundary_rule_leaves_terminated_steps_byte_identical(step):
    assert ends_sentence(step) and as_sentence(step) is step


def test_joined_unterminated_steps_split_back_only_with_the_rule():
    steps = [s for s, _ in RELEASED_PATTERNS] + ["So, the answer is stop"]
    joined = " ".join(as_sentence(s) for s in steps)
    assert split_sentences(joined) == [as_sentence(s) for s in steps]
    assert len(split_sentences(" ".join(steps))) == 2  # without it: one run-on sentence (and "Spokane.'")


def test_splitter_on_sentences_of_the_released_files():
    # "no." is a word unless a number follows; "etc." ends a sentence before a capital
    assert split_sentences("So, the answer is absolutely no. Next step.") == \
        ["So, the answer is absolutely no.", "Next step."]
    assert split_sentences("It is No. 5 on the list. Next.") == ["It is No. 5 on the list.", "Next."]
    assert split_sentences("It holds pens, etc. The mug is red.") == ["It holds pens, etc.", "The mug is red."]
    assert split_sentences("It holds pens, etc. and more.") == ["It holds pens, etc. and more."]
    # initialisms before a lower-case word, quoted marks inside a sentence, ordinals, "Ft."
    assert split_sentences("A common theme is the U.S. as a threatening enemy. Next.") == \
        ["A common theme is the U.S. as a threatening enemy.", "Next."]
    assert split_sentences("Two players with initials F.V. and F.S. So it is.") == \
        ["Two players with initials F.V. and F.S.", "So it is."]
    assert split_sentences("There is a warning word 'SLOW!' written prominently. Next.") == \
        ["There is a warning word 'SLOW!' written prominently.", "Next."]
    assert split_sentences("It is on July 1st. So, the answer is Canada Day.") == \
        ["It is on July 1st.", "So, the answer is Canada Day."]
    assert split_sentences("The word 'Ft. Spokane.' is shown. Next.") == ["The word 'Ft. Spokane.' is shown.", "Next."]
    assert split_sentences("He said \u201cyes.\u201d Then he left.") == ["He said \u201cyes.\u201d", "Then he left."]
    # a known limit: an initialism before a capital reads as a sentence end (1 CulturalVQA step)
    assert len(split_sentences("The image shows U.S. Department of Agriculture coupons.")) == 2


def test_text_functions_reject_non_text():
    for call, name in ((lambda: split_steps(None), "text"), (lambda: split_sentences(b"a."), "text"),
                       (lambda: as_sentence(3), "step"), (lambda: ends_sentence(None), "step")):
        with pytest.raises(TypeError, match=name):
            call()


REAL = Path("/work/shared/reference/annotated")


def _released_chains(name: str) -> list[list[str]]:
    records = json.loads((REAL / name).read_text("utf-8"))
    return [r["keys_filtered"].get("Image_level", []) + r["keys_filtered"]["Reasoning_level"] for r in records]


@pytest.mark.skipif(not (REAL / "aokvqa_val_mmb.json").is_file(), reason="authors' files not present")
def test_released_chains_keep_their_steps():
    """The authors' files: the counts of unterminated steps, and every chain written with the rule
    splits back into its own steps (all of A-OKVQA; CulturalVQA but one "U.S. Department" step)."""
    for name, unterminated, total, off in (("aokvqa_val_mmb.json", 3110, 4656, 0),
                                           ("culturalvqa_mmb.json", 301, 3339, 1)):
        chains = _released_chains(name)
        steps = [s for c in chains for s in c]
        assert (sum(not ends_sentence(s) for s in steps), len(steps)) == (unterminated, total)
        kept = [len(split_steps(" ".join(as_sentence(s) for s in c))) == len(c) for c in chains if c]
        assert kept.count(False) == off, name
        plain = sum(len(split_steps(" ".join(c))) for c in chains if c)
        assert plain <= total - unterminated * 2 // 3  # joined as they are, steps run together (2,332 A-OKVQA)
