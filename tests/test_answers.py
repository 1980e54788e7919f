from mmboundary.answers import extract_answer, is_correct, normalize_answer


def test_extract_the_last_final_answer():
    assert extract_answer("There are 2 red objects. So the answer is 2.") == "2"
    assert extract_answer("So the answer is 1. Wait. So, the answer is Three.") == "3"
    assert extract_answer("So the answer is yes, with total certainty.") == "yes"
    assert extract_answer("There are 2 red objects.") is None
    assert extract_answer("So the answer is") is None


def test_normalisation_and_correctness():
    assert normalize_answer("The Red Colour!") == "red color"
    assert is_correct("two", ["2"])
    assert is_correct("thirty", ["30th", "thirty"])
    assert not is_correct("3", ["2"])
    assert not is_correct(None, ["2"])
