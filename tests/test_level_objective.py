"""The expected-reward objective over levels (`training.level_objective`), by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mmboundary.training.level_objective import (
    expected_level_loss,
    level_alternatives,
    level_logprobs,
    level_reward_table,
)
from mmboundary.training.rewards import RewardConfig, r_cs, r_ec, r_ka


def test_reward_table_by_hand():
    # step 0: right (y = 1), internal level 4; step 1 (final): the answer is wrong (a = 0), internal 2
    table = level_reward_table([1, 1], [4, 2], answer_correct=0, config=RewardConfig())
    # level 1 at step 0: R_KA 1, R_EC 1 - 2 (0.1 - 1)^2 = -0.62, R_CS 1 - 2 * 3 / 4 = -0.5
    assert table[0][0] == pytest.approx(1 - 0.62 - 0.5)
    # level 5 at step 0: 1 + (1 - 2 * 0.01) + (1 - 2 * 1 / 4)
    assert table[0][4] == pytest.approx(1 + 0.98 + 0.5)
    # the final step is scored on the answer: R_KA -1; level 1: R_EC 1 - 2 * 0.1^2, R_CS 1 - 2 / 4
    assert table[1][0] == pytest.approx(-1 + 0.98 + 0.5)
    assert table[1][1] == pytest.approx(-1 + 0.82 + 1.0)
    # R_CS on the probability scale: level 5 vs internal 4 costs 2 * 0.2^2
    prob = level_reward_table([1, 1], [4, 2], 0, RewardConfig(cs_scale="probability"))
    assert prob[0][4] == pytest.approx(1 + 0.98 + 0.92)
    assert prob[0][3] == pytest.approx(1 + (1 - 2 * 0.09) + 1.0)


def test_reward_table_is_the_configured_sum():
    cfg = RewardConfig(alpha=0.5, beta=2.0, gamma=0.25, final_ec_target="step")
    correct, internal = [0, 1, 1], [3, 5, 1]
    table = level_reward_table(correct, internal, answer_correct=0, config=cfg)
    for t in range(3):
        ka_target = 0 if t == 2 else correct[t]  # R_KA of the final step is the answer's
        for lv in range(1, 6):
            want = 0.5 * r_ka(ka_target) + 2.0 * r_ec(lv, correct[t]) + 0.25 * r_cs(lv, internal[t])
            assert table[t][lv - 1] == pytest.approx(want)


def test_alternatives_by_hand():
    response = "There are 2 squares, and I think this is likely right. So the answer is 2, but I am not sure!"
    body_end = response.index(", but")
    stmt_end = response.index("!")
    alt = level_alternatives(response, body_end, stmt_end, len(response), [["a"], ["b"], ["c"], ["d"], ["e", "f"]])
    assert alt.prefix == response[:body_end]
    assert alt.texts[0] == (response[:body_end] + ", a!",)
    assert alt.texts[4] == (response[:body_end] + ", e!", response[:body_end] + ", f!")
    first = level_alternatives(response, response.index(", and"), response.index(". So"), response.index(" So"),
                               [["x"]] * 5)
    assert first.texts[2] == ("There are 2 squares, x.",)
    with pytest.raises(ValueError, match="each of the 5 levels"):
        level_alternatives(response, body_end, stmt_end, len(response), [["a"]] * 4)


def test_level_logprobs_sum_each_levels_phrasings():
    seq = torch.log(torch.tensor([[0.1, 0.2, 0.05, 0.05, 0.3, 0.0 + 1e-30, 0.1, 0.1, 0.05, 0.05]]))
    lv = level_logprobs(seq, phrasings=2)
    assert torch.allclose(lv.exp(), torch.tensor([[0.3, 0.1, 0.3, 0.2, 0.1]]), atol=1e-6)
    with pytest.raises(ValueError):
        level_logprobs(seq, phrasings=3)


def test_expected_loss_and_its_gradient_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, math.log(6.0)]], requires_grad=True)  # q = .1 .1 .1 .1 .6
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])
    ref = torch.zeros(1, 5)  # uniform
    out = expected_level_loss(logits, rewards, ref, kl_coef=0.5, gradient="exact")
    kl = 4 * 0.1 * math.log(0.5) + 0.6 * math.log(3.0)
    assert float(out.expected_reward[0]) == pytest.approx(0.6)
    assert float(out.kl[0]) == pytest.approx(kl)
    assert float(out.loss.detach()) == pytest.approx(-0.6 + 0.5 * kl)
    # without the KL: d loss / d logit_l = -q_l (R_l - E_q R)
    logits.grad = None
    expected_level_loss(logits, rewards, ref, kl_coef=0.0, gradient="exact").loss.backward()
    assert torch.allclose(logits.grad, torch.tensor([[0.06, 0.06, 0.06, 0.06, -0.24]]), atol=1e-6)
    # a constant added to every level's reward (R_KA) changes no gradient
    logits.grad = None
    expected_level_loss(logits, rewards + 3.0, ref, kl_coef=0.0, gradient="exact").loss.backward()
    assert torch.allclose(logits.grad, torch.tensor([[0.06, 0.06, 0.06, 0.06, -0.24]]), atol=1e-6)


def test_natural_gradient_moves_each_level_by_its_centred_advantage():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, math.log(6.0)]], requires_grad=True)  # q = .1 .1 .1 .1 .6
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])
    out = expected_level_loss(logits, rewards, torch.zeros(1, 5), kl_coef=0.0, gradient="natural")
    out.loss.backward()
    # A = R - 0.6 = (-.6, -.6, -.6, -.6, .4); centred: minus its mean (-.4) -> (-.2, -.2, -.2, -.2, .8)
    assert torch.allclose(logits.grad, torch.tensor([[0.2, 0.2, 0.2, 0.2, -0.8]]), atol=1e-6)
    assert float(out.expected_reward[0]) == pytest.approx(0.6)
    # an almost never stated best level: the exact gradient all but vanishes, the natural one does not
    rare = torch.tensor([[0.0, 0.0, 0.0, 0.0, -12.0]], requires_grad=True)
    expected_level_loss(rare, rewards, torch.zeros(1, 5), 0.0, gradient="exact").loss.backward()
    exact_g = float(rare.grad[0, 4])
    rare.grad = None
    expected_level_loss(rare, rewards, torch.zeros(1, 5), 0.0, gradient="natural").loss.backward()
    assert abs(exact_g) < 1e-5 and float(rare.grad[0, 4]) == pytest.approx(-0.8, abs=1e-4)
    with pytest.raises(ValueError, match="gradient"):
        expected_level_loss(rare, rewards, torch.zeros(1, 5), 0.0, gradient="other")


def test_floored_gradient_lifts_a_rare_better_level_and_stops_pushing_a_rare_worse_one():
    # q = .1 .1 .1 .1 .6 with the best level already likely: the floored gradient is the exact one
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, math.log(6.0)]], requires_grad=True)
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])
    expected_level_loss(logits, rewards, torch.zeros(1, 5), 0.0, gradient="floored", floor=0.05).loss.backward()
    assert torch.allclose(logits.grad, torch.tensor([[0.06, 0.06, 0.06, 0.06, -0.24]]), atol=1e-6)
    # the best level almost never stated (q5 = e^-12 / (4 + e^-12)): weight max(q5, 0.05) = 0.05,
    # so d/dz5 = -0.05 (1 - E) with E = q5; levels 1-4 (A = -E < 0) keep the exact weight 0.25
    rare = torch.tensor([[0.0, 0.0, 0.0, 0.0, -12.0]], requires_grad=True)
    q5 = math.exp(-12) / (4 + math.exp(-12))
    expected_level_loss(rare, rewards, torch.zeros(1, 5), 0.0, gradient="floored", floor=0.05).loss.backward()
    assert float(rare.grad[0, 4]) == pytest.approx(-0.05 * (1 - q5), rel=1e-6)
    assert torch.allclose(rare.grad[0, :4], torch.full((4,), 0.25 * q5), rtol=1e-4)
    # a rare WORSE level: the natural gradient keeps pushing it down (+0.8 on its logit), the
    # floored one with its vanishing exact weight q5 (A5 = -(1 - q5))
    worse = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    rare.grad = None
    expected_level_loss(rare, worse, torch.zeros(1, 5), 0.0, gradient="natural").loss.backward()
    assert float(rare.grad[0, 4]) == pytest.approx(0.8, abs=1e-4)
    rare.grad = None
    expected_level_loss(rare, worse, torch.zeros(1, 5), 0.0, gradient="floored").loss.backward()
    assert float(rare.grad[0, 4]) == pytest.approx(q5 * (1 - q5), rel=1e-4)
    with pytest.raises(ValueError, match="floor"):
        expected_level_loss(rare, worse, torch.zeros(1, 5), 0.0, gradient="floored", floor=1.5)


def test_a_temperature_keeps_the_gradient_of_a_rare_level():
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])
    rare = torch.tensor([[0.0, 0.0, 0.0, 0.0, -12.0]], requires_grad=True)
    expected_level_loss(rare, rewards, torch.zeros(1, 5), 0.0, temperature=4.0).loss.backward()
    # q_tau = softmax(z / 4): level 5 gets e^-3 / (4 + e^-3); d(-E_tau R)/dz_5 = -q5 (1 - q5) / 4
    q5 = math.exp(-3) / (4 + math.exp(-3))
    assert float(rare.grad[0, 4]) == pytest.approx(-q5 * (1 - q5) / 4, rel=1e-5)
    # the returned expectation is still under q itself
    out = expected_level_loss(rare, rewards, torch.zeros(1, 5), 0.0, temperature=4.0)
    assert float(out.expected_reward[0]) == pytest.approx(math.exp(-12) / (4 + math.exp(-12)), rel=1e-4)
