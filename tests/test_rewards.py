"""Per-step rewards, their placement on tokens and the KL controllers
(mmboundary.training.rewards, records of mmboundary.training.rollout).

Expected values are computed by hand in each test, with p(L) = (L - 0.5) / 5.
"""

from __future__ import annotations

import math

import pytest
import torch

from mmboundary.training.rewards import (
    AdaptiveKLController,
    FixedKLController,
    RewardConfig,
    assign_rewards,
    kl_penalty,
    mean_components,
    r_cs,
    r_ec,
    r_ka,
    reward_positions,
    step_rewards,
    token_rewards,
)
from mmboundary.training.rollout import Rollout, RolloutStep, StepRewards, pad_right


def hand_rollout(**slots) -> Rollout:
    """12 generated tokens, four steps, then one end-of-sequence token (index 11).

    step 0: tokens [0, 4), statement [2, 4): level 5 stated, internal 2, wrong    (overconfident)
    step 1: tokens [4, 7), statement [5, 7): level 1 stated, internal 1, right    (underconfident)
    step 2: tokens [7, 9), statement [8, 9): unparsed,        internal 3, right
    step 3: tokens [9, 11), statement [10, 11): level 4 stated, internal 4, y = 0; answer a = 1
    """
    steps = (
        RolloutStep(0, 4, 2, 4, expressed_level=5, internal_level=2, correct=0),
        RolloutStep(4, 7, 5, 7, expressed_level=1, internal_level=1, correct=1),
        RolloutStep(7, 9, 8, 9, expressed_level=None, internal_level=3, correct=1),
        RolloutStep(9, 11, 10, 11, expressed_level=4, internal_level=4, correct=0),
    )
    return Rollout(example_id="ex", prompt_length=7, tokens=tuple(range(100, 112)), steps=steps,
                   answer_correct=1, **slots)


# Hand values of hand_rollout's steps under the default config (final step scored against a = 1):
#   step 0: R_KA = 2*0 - 1 = -1; R_EC = 1 - 2*(0.9 - 0)^2 = 1 - 1.62 = -0.62;
#           R_CS = 1 - 2*|5 - 2|/4 = 1 - 1.5 = -0.5
#   step 1: R_KA = +1; R_EC = 1 - 2*(0.1 - 1)^2 = -0.62; R_CS = 1 - 2*0/4 = 1
#   step 2: R_KA = +1; R_EC = R_CS = -1 (unparsed)
#   step 3: R_KA = 2*a - 1 = +1 (a, not y_3 = 0); R_EC = 1 - 2*(0.7 - 1)^2 = 1 - 0.18 = 0.82;
#           R_CS = 1
KA = [-1.0, 1.0, 1.0, 1.0]
EC = [1 - 2 * 0.9**2, 1 - 2 * 0.9**2, -1.0, 1 - 2 * 0.3**2]
CS = [1 - 2 * 3 / 4, 1.0, -1.0, 1.0]


def test_component_functions_by_hand():
    assert r_ka(1) == 1.0 and r_ka(0) == -1.0
    # Perfectly calibrated extremes of the scale: level 5 (p = 0.9) right, level 1 (p = 0.1) wrong.
    assert r_ec(5, 1) == pytest.approx(1 - 2 * 0.1**2)  # 0.98
    assert r_ec(1, 0) == pytest.approx(1 - 2 * 0.1**2)
    assert r_ec(3, 1) == pytest.approx(1 - 2 * 0.5**2)  # 0.5
    assert r_ec(None, 1) == -1.0
    assert r_cs(3, 3) == 1.0
    assert r_cs(1, 5) == -1.0  # the largest gap, 4 levels
    assert r_cs(2, 3) == pytest.approx(0.5)
    assert r_cs(None, 3) == -1.0
    assert r_ec(None, 0, unparsed_reward=-0.5) == -0.5
    with pytest.raises(ValueError):
        r_ka(2)
    with pytest.raises(ValueError):
        r_ec(6, 1)
    with pytest.raises(ValueError):
        r_cs(3, 0)


def test_r_ka_is_the_matching_degree_when_a_judge_gave_one():
    """R_KA = 2 m - 1 with the step judge's matching degree m (the paper's R_KA on datasets
    without exact truth); the exact checker's degree is y itself, so both formulas agree there."""
    assert r_ka(1, 0.8) == pytest.approx(0.6)
    assert r_ka(1, 0.65) == pytest.approx(0.3)
    assert r_ka(0, 0.0) == -1.0 and r_ka(1, 1.0) == r_ka(1) == 1.0
    with pytest.raises(ValueError):
        r_ka(1, 1.2)
    with pytest.raises(ValueError):
        RolloutStep(0, 2, 1, 2, expressed_level=3, internal_level=3, correct=1, knowledge=-0.1)


def test_step_rewards_use_each_steps_degree_but_not_on_the_final_step():
    steps = (
        RolloutStep(0, 4, 2, 4, expressed_level=5, internal_level=2, correct=1, knowledge=0.9),
        RolloutStep(4, 7, 5, 7, expressed_level=1, internal_level=1, correct=1, knowledge=0.7),
        RolloutStep(7, 9, 8, 9, expressed_level=3, internal_level=3, correct=0, knowledge=0.0),
        RolloutStep(9, 11, 10, 11, expressed_level=4, internal_level=4, correct=1, knowledge=0.75),
    )
    rollout = Rollout(example_id="ex", prompt_length=7, tokens=tuple(range(100, 112)), steps=steps, answer_correct=0)
    rewards = step_rewards(rollout)
    # 2 * 0.9 - 1 = 0.8; 2 * 0.7 - 1 = 0.4; 2 * 0 - 1 = -1; the final step: the answer, a = 0 -> -1
    assert [r.r_ka for r in rewards] == pytest.approx([0.8, 0.4, -1.0, -1.0])
    # R_EC still scores y: step 0 right at level 5: 1 - 2 * 0.1^2 = 0.98
    assert rewards[0].r_ec == pytest.approx(0.98)


def test_step_rewards_on_hand_made_steps():
    rewards = step_rewards(hand_rollout())
    assert [r.r_ka for r in rewards] == pytest.approx(KA)
    assert [r.r_ec for r in rewards] == pytest.approx(EC)
    assert [r.r_cs for r in rewards] == pytest.approx(CS)
    # totals with alpha = beta = gamma = 1:
    # -1 - 0.62 - 0.5 = -2.12; 1 - 0.62 + 1 = 1.38; 1 - 1 - 1 = -1; 1 + 0.82 + 1 = 2.82
    assert [r.total for r in rewards] == pytest.approx([-2.12, 1.38, -1.0, 2.82])


def test_wrong_step_with_high_confidence_scores_below_low_confidence():
    wrong_sure = RolloutStep(0, 2, 1, 2, expressed_level=5, internal_level=5, correct=0)
    wrong_unsure = RolloutStep(0, 2, 1, 2, expressed_level=1, internal_level=1, correct=0)
    tail = RolloutStep(2, 3, 2, 3, expressed_level=3, internal_level=3, correct=1)

    def first(step):
        return step_rewards(Rollout("e", 0, (1, 2, 3), (step, tail), answer_correct=1))[0]

    # R_EC: 1 - 2*0.81 = -0.62 (sure) vs 1 - 2*0.01 = 0.98 (unsure); R_KA and R_CS equal.
    assert first(wrong_sure).r_ec == pytest.approx(-0.62)
    assert first(wrong_unsure).r_ec == pytest.approx(0.98)
    assert first(wrong_sure).total < first(wrong_unsure).total


def test_final_step_uses_answer_correctness():
    rollout = hand_rollout()
    final = step_rewards(rollout)[-1]
    assert final.r_ka == 1.0  # a = 1 although y_3 = 0
    assert final.r_ec == pytest.approx(1 - 2 * (0.7 - 1) ** 2)
    # Scored against y_3 = 0 instead: R_EC = 1 - 2*(0.7 - 0)^2 = 0.02; R_KA still uses a.
    final_step = step_rewards(rollout, RewardConfig(final_ec_target="step"))[-1]
    assert final_step.r_ka == 1.0
    assert final_step.r_ec == pytest.approx(0.02)
    # With a = 0 the final R_KA is -1 although nothing else changed.
    wrong = rollout.with_(answer_correct=0)
    assert step_rewards(wrong)[-1].r_ka == -1.0
    assert step_rewards(wrong)[:-1] == step_rewards(rollout)[:-1]


def test_weighted_total():
    config = RewardConfig(alpha=0.5, beta=2.0, gamma=3.0)
    rewards = step_rewards(hand_rollout(), config)
    for r, ka, ec, cs in zip(rewards, KA, EC, CS, strict=True):
        assert r.total == pytest.approx(0.5 * ka + 2.0 * ec + 3.0 * cs)


def test_reward_positions_last_statement_token_or_last_step_token():
    assert reward_positions(hand_rollout()) == (3, 6, 8, 10)
    no_statement = Rollout("e", 0, (1, 2, 3, 4, 5), (
        RolloutStep(0, 3, None, None, expressed_level=None, internal_level=2, correct=1),
        RolloutStep(3, 5, 3, 4, expressed_level=2, internal_level=2, correct=1),
    ), answer_correct=1)
    # step 0 has no statement: its reward sits on its own last token (2); step 1's statement
    # ends at token 3 (span [3, 4)), before the step's last token 4.
    assert reward_positions(no_statement) == (2, 3)
    r0 = step_rewards(no_statement)[0]
    assert (r0.r_ka, r0.r_ec, r0.r_cs) == (1.0, -1.0, -1.0)


def test_token_rewards_place_totals_and_kl():
    logprobs = torch.tensor([-0.5, -1.0, -0.2, -2.0, -0.1, -0.3, -0.7, -1.5, -0.4, -0.9, -0.05,
                             -0.6], dtype=torch.float64)
    ref = torch.tensor([-0.7, -0.8, -0.2, -2.5, -0.3, -0.3, -0.2, -1.0, -0.4, -1.2, -0.15, -0.1],
                       dtype=torch.float64)
    rollout = assign_rewards(hand_rollout(logprobs=logprobs, ref_logprobs=ref))
    out = token_rewards(rollout, kl_coef=0.1)
    expected_score = torch.zeros(12, dtype=torch.float64)
    expected_score[3], expected_score[6], expected_score[8], expected_score[10] = (
        -2.12, 1.38, -1.0, 2.82)
    torch.testing.assert_close(out.score, expected_score)
    # KL on token 0: -0.1 * (-0.5 - (-0.7)) = -0.02; on token 1: -0.1 * (-1.0 + 0.8) = +0.02
    assert out.kl[0].item() == pytest.approx(-0.02)
    assert out.kl[1].item() == pytest.approx(0.02)
    torch.testing.assert_close(out.total, out.score + out.kl)
    torch.testing.assert_close(kl_penalty(logprobs, ref, 0.1), -0.1 * (logprobs - ref))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (0.5, 2.0, 3.0)])
def test_token_reward_sum_is_configured_sum_minus_kl(weights):
    """Summed over a sequence, the reward the optimiser receives is exactly
    alpha*sum R_KA + beta*sum R_EC + gamma*sum R_CS - kl_coef*sum(logp - logp_ref), and
    switching one weight to 0 removes exactly that term (an unused term would fail this)."""
    alpha, beta, gamma = weights
    gen = torch.Generator().manual_seed(0)
    logprobs = -torch.rand(12, generator=gen, dtype=torch.float64) * 3
    ref = -torch.rand(12, generator=gen, dtype=torch.float64) * 3
    base = hand_rollout(logprobs=logprobs, ref_logprobs=ref)
    kl_coef = 0.05
    kl_sum = kl_coef * (logprobs - ref).sum().item()

    def total(a, b, c):
        rollout = assign_rewards(base, RewardConfig(alpha=a, beta=b, gamma=c))
        return token_rewards(rollout, kl_coef).total.sum().item()

    # sum R_KA = -1 + 1 + 1 + 1 = 2; sum R_EC = -0.62 - 0.62 - 1 + 0.82 = -1.42;
    # sum R_CS = -0.5 + 1 - 1 + 1 = 0.5
    sum_ka, sum_ec, sum_cs = 2.0, -1.42, 0.5
    assert sum(KA) == pytest.approx(sum_ka)
    assert sum(EC) == pytest.approx(sum_ec)
    assert sum(CS) == pytest.approx(sum_cs)
    full = total(alpha, beta, gamma)
    assert full == pytest.approx(alpha * sum_ka + beta * sum_ec + gamma * sum_cs - kl_sum)
    assert full - total(0.0, beta, gamma) == pytest.approx(alpha * sum_ka)
    assert full - total(alpha, 0.0, gamma) == pytest.approx(beta * sum_ec)
    assert full - total(alpha, beta, 0.0) == pytest.approx(gamma * sum_cs)
    assert total(0.0, 0.0, 0.0) == pytest.approx(-kl_sum)


def test_token_rewards_without_logprobs_needs_zero_kl():
    rollout = assign_rewards(hand_rollout())
    out = token_rewards(rollout, kl_coef=0.0)
    assert out.kl.abs().sum().item() == 0.0
    assert out.total.sum().item() == pytest.approx(-2.12 + 1.38 - 1.0 + 2.82)
    with pytest.raises(ValueError, match="needs logprobs"):
        token_rewards(rollout, kl_coef=0.1)
    with pytest.raises(ValueError, match="assign_rewards"):
        token_rewards(hand_rollout(), kl_coef=0.0)


def test_mean_components():
    means = mean_components(step_rewards(hand_rollout()))
    assert means["r_ka"] == pytest.approx(2.0 / 4)
    assert means["r_ec"] == pytest.approx(-1.42 / 4)
    assert means["r_cs"] == pytest.approx(0.5 / 4)
    assert means["total"] == pytest.approx((-2.12 + 1.38 - 1.0 + 2.82) / 4)
    assert all(math.isnan(v) for v in mean_components([]).values())


def test_rollout_without_steps_gets_no_step_reward():
    rollout = Rollout("e", 3, (1, 2), (), answer_correct=0)
    assert step_rewards(rollout) == ()
    assert token_rewards(assign_rewards(rollout), 0.0).total.tolist() == [0.0, 0.0]


def test_fixed_kl_controller():
    controller = FixedKLController(0.05)
    assert controller.update(100.0, 64) == 0.05


def test_adaptive_kl_controller_by_hand():
    controller = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    # KL 9: error = clip(9/6 - 1 = 0.5, -0.2, 0.2) = 0.2; beta = 0.1 * (1 + 0.2 * 256/10000)
    assert controller.update(9.0, 256) == pytest.approx(0.1 * 1.00512)
    # KL 6.6: error = 0.1; beta *= 1 + 0.1 * 1000/10000 = 1.01
    assert controller.update(6.6, 1000) == pytest.approx(0.1 * 1.00512 * 1.01)
    # KL 6 (on target): unchanged
    assert controller.update(6.0, 1000) == pytest.approx(0.1 * 1.00512 * 1.01)
    # KL 0: error = clip(-1) = -0.2; beta *= 1 - 0.2 * 5000/10000 = 0.9
    assert controller.update(0.0, 5000) == pytest.approx(0.1 * 1.00512 * 1.01 * 0.9)
    restored = AdaptiveKLController(1.0, 1.0, 1.0)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value and restored.target == 6.0
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=1.0)


def test_rollout_validation():
    step = RolloutStep(0, 2, 1, 2, expressed_level=3, internal_level=3, correct=1)
    with pytest.raises(ValueError, match="inside the step span"):
        RolloutStep(0, 2, 1, 3, expressed_level=3, internal_level=3, correct=1)
    with pytest.raises(ValueError, match="without a statement span"):
        RolloutStep(0, 2, None, None, expressed_level=3, internal_level=3, correct=1)
    with pytest.raises(ValueError, match="internal_level"):
        RolloutStep(0, 2, 1, 2, expressed_level=3, internal_level=None, correct=1)
    with pytest.raises(ValueError, match="correct"):
        RolloutStep(0, 2, 1, 2, expressed_level=3, internal_level=3, correct=True)
    with pytest.raises(ValueError, match="overlap"):
        Rollout("e", 0, (1, 2, 3), (step, step), answer_correct=1)
    with pytest.raises(ValueError, match="past the"):
        Rollout("e", 0, (1,), (step,), answer_correct=1)
    with pytest.raises(ValueError, match="logprobs"):
        Rollout("e", 0, (1, 2), (step,), answer_correct=1, logprobs=torch.zeros(3))
    with pytest.raises(ValueError, match="step rewards"):
        Rollout("e", 0, (1, 2), (step,), answer_correct=1, rewards=())
    ok = Rollout("e", 0, [1, 2], [step], answer_correct=1)
    assert ok.tokens == (1, 2) and len(ok) == 2
    assert isinstance(step_rewards(ok)[0], StepRewards)


def test_pad_right():
    batch, mask = pad_right([torch.tensor([1.0, 2.0]), torch.tensor([3.0])], value=-9.0)
    assert batch.tolist() == [[1.0, 2.0], [3.0, -9.0]]
    assert mask.tolist() == [[True, True], [True, False]]
    with pytest.raises(ValueError):
        pad_right([torch.tensor([1.0, 2.0])], length=1)
