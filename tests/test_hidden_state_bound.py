"""benchmarks/hidden_state_bound.py: its probe is an L2 logistic regression; cross-checked against
scikit-learn's, and its penalty search by question is checked on data where the answer is known."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def probe():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("hidden_state_bound",
                                                      ROOT / "benchmarks" / "hidden_state_bound.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _data(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = np.linspace(-1.5, 1.5, d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ w + 0.3)))).astype(int)
    return x, y


@pytest.mark.parametrize("l2", [1e-3, 0.1, 1.0])
def test_probe_equals_sklearn_logistic_regression(probe, l2):
    from sklearn.linear_model import LogisticRegression

    x, y = _data()
    w, b = probe.fit_logistic(x, y, l2)
    # mean log loss + l2/2 |w|^2  ==  (1/(l2 n)) * (sum log loss) + 1/2 |w|^2, up to the factor l2
    ref = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(w, ref.coef_[0], atol=1e-5)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-5)
    np.testing.assert_allclose(probe.predict(x, (w, b)), ref.predict_proba(x)[:, 1], atol=1e-6)


def test_penalty_search_prefers_little_penalty_on_a_clean_signal_and_much_on_noise(probe):
    x, y = _data(n=600)
    groups = [f"q{i // 4}" for i in range(len(y))]  # four steps per question, folds split by question
    assert probe.choose_l2(x, y, groups) <= 1e-2
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(60, 40))  # 40 useless features, few examples: shrink them away
    labels = (rng.random(60) < 0.5).astype(int)
    assert probe.choose_l2(noise, labels, [f"q{i // 4}" for i in range(60)]) >= 0.1


def test_log_loss_by_hand(probe):
    p = np.array([0.9, 0.2])
    y = np.array([1, 0])
    assert probe.log_loss(p, y) == pytest.approx(-(np.log(0.9) + np.log(0.8)) / 2)
