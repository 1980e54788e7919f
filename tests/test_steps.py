from mmboundary.steps import split_sentences, split_steps


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
