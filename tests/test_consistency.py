"""Consistency of two sentences' checkable content (evaluation/consistency.py)."""

from __future__ import annotations

import pytest

from mmboundary.data.benchmark.language import COLOR_RGB
from mmboundary.evaluation.consistency import COLORS, claims, conflicts, consistent


def _conflicts(a: str, b: str) -> tuple[str, ...]:
    return conflicts(claims(a), claims(b))


def test_numbers_digits_words_decimals():
    assert claims("There are three red circles.").numbers == ("3",)
    assert _conflicts("There are three red circles.", "There are 3 red circles") == ()
    assert _conflicts("There are 2 red circles.", "There are 3 red circles.") == ("numbers",)
    assert claims("2.50 and 03 and 1,000 and 2.0 and the 30th and twenty").numbers == ("1000", "2", "2.5", "20",
                                                                                       "3", "30")
    assert _conflicts("It costs 2.5 dollars.", "It costs 2.50 dollars") == ()
    assert _conflicts("It costs 2.5 dollars.", "It costs 25 dollars.") == ("numbers",)
    # multisets: a repeated number counts, the order does not (the known blind spot)
    assert _conflicts("2 minus 1 is 2.", "2 minus 1 is 1.") == ("numbers",)
    assert claims("2 minus 1 is 1.").numbers == ("1", "1", "2")
    assert _conflicts("3 minus 1 is 2.", "3 minus 2 is 1.") == ()


def test_a_class_only_one_sentence_mentions_says_nothing():
    assert _conflicts("There is a red circle.", "There is 1 circle.") == ()
    assert claims("There is a red circle.").numbers == ()


def test_colors():
    assert set(COLOR_RGB) <= COLORS
    assert _conflicts("The square is blue.", "The square is red.") == ("colors",)
    assert _conflicts("The square is grey.", "The colour of the square is gray") == ()
    assert claims("The Square is BLUE.").colors == {"blue"}


def test_spatial():
    assert _conflicts("The red circle is to the left of the blue square.",
                      "The red circle is right of the blue square.") == ("spatial",)
    assert _conflicts("The red circle is to the left of the blue square.",
                      "The red circle is left of the blue square") == ()
    assert claims("in the centre, under, beneath, over").spatial == {"center", "below", "above"}
    # documented choices: middle != center, and sets must be equal
    assert _conflicts("The circle is in the middle.", "The circle is in the center.") == ("spatial",)
    assert _conflicts("The circle is at the top left.", "The circle is on the left.") == ("spatial",)


def test_sizes_and_comparisons():
    assert _conflicts("The circle is big.", "The circle is large.") == ()
    assert _conflicts("The circle is small.", "The circle is large.") == ("sizes",)
    assert claims("The circle is bigger.").sizes == frozenset()
    assert _conflicts("2 is greater than 1.", "2 is more than 1.") == ()
    assert _conflicts("2 is more than 1.", "2 is less than 1.") == ("comparisons",)
    assert _conflicts("There are fewer circles.", "There are less circles.") == ()


def test_negation_parity():
    assert _conflicts("The circle is not red.", "The circle is red.") == ("negated",)
    assert claims("The circle isn't red.").negated and claims("The circle isn\u2019t red").negated
    assert _conflicts("The circle isn't red.", "The circle is not red.") == ()
    assert not claims("It is not true that the circle is not red.").negated  # two cues
    assert _conflicts("It is not true that the circle is not red.", "The circle is red.") == ()
    assert claims("I can't see it.").negated and claims("I cannot see it.").negated
    assert claims("It is never red.").negated
    assert claims("It is neither red nor blue.").negated  # "nor" is not a second cue


def test_no_is_the_number_zero_not_a_negation():
    no, zero = claims("There are no red circles."), claims("There are 0 red circles")
    assert no.numbers == zero.numbers == ("0",) and not no.negated and not zero.negated
    assert consistent(no, zero)
    assert consistent(no, claims("There aren't any red circles."))
    assert consistent(no, claims("There are none."))
    assert _conflicts("There are no red circles.", "There are 2 red circles.") == ("numbers",)
    # "no" with no word after it is a negation: yes/no answers disagree
    assert claims("So the answer is no.").negated and claims("So the answer is no").negated
    assert _conflicts("So the answer is no.", "So the answer is yes.") == ("negated",)


def test_proper_nouns():
    assert claims("So the answer is Konya").proper_nouns == {"Konya"}
    assert claims("Konya is a city. Paris too.").proper_nouns == frozenset()  # sentence starts
    assert claims("So I think I'm right.").proper_nouns == frozenset()
    assert _conflicts("So the answer is A.", "So the answer is B.") == ("proper_nouns",)
    assert _conflicts("So the answer is Konya", "So the performers are from Konya.") == ()


def test_conflicts_in_field_order_and_final_period():
    assert _conflicts("The small square is not red.", "The large square is blue") == ("colors", "sizes", "negated")
    assert claims("So the answer is 3") == claims("So the answer is 3.")
    with pytest.raises(TypeError):
        claims(3)
