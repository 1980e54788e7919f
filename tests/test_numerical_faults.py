"""Numerical faults (issue 9, part 3): a batch whose loss or gradient is NaN/inf never reaches the
weights; it is logged and skipped; after `max_nonfinite_in_a_row` in a row, training stops with
`NonFiniteError` and the newest checkpoint is left intact (and still resumes to the weights of
an uninterrupted run). The faults are injected by a model whose own loss goes bad on chosen
calls. Last, PPO's `ppo_update` skips a minibatch with a NaN loss (fixtures of tests/test_rl.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from mmboundary.config import TrainConfig
from mmboundary.errors import MMBoundaryError, NonFiniteError
from mmboundary.training.loop import train_supervised

# --- the supervised loop ------------------------------------------------------------------------

def _items():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(40, generator=g)
    return list(zip(x, y))


def _collate(batch):
    return {"x": torch.stack([b[0] for b in batch]), "y": torch.stack([b[1] for b in batch])}


class FaultyModel(torch.nn.Module):
    """A small regression model with its own loss (`model(**batch).loss`, the loop's default
    path), made non-finite on chosen calls (1-based): "nan", "inf", "-inf" (the loss value),
    "grad" (a finite loss whose gradient is NaN: d sqrt(u)/du at u = 0 times 0), "poison" (a
    finite loss and gradient, after which a bias is set to NaN: broken weights that a
    checkpoint must not take). It keeps a copy of the weights it sees at each call."""

    def __init__(self, faults: dict[int, str] | None = None):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.faults = faults or {}
        self.calls = 0
        self.seen: list[dict[str, torch.Tensor]] = []

    def forward(self, x, y):
        self.calls += 1
        self.seen.append({n: p.detach().clone() for n, p in self.net.named_parameters()})
        loss = ((self.net(x).squeeze(-1) - y) ** 2).mean()
        kind = self.faults.get(self.calls)
        if kind in ("nan", "inf", "-inf"):
            loss = loss * float(kind)
        elif kind == "grad":
            loss = loss + (0.0 * self.net[0].weight.sum()).sqrt()  # value 0, gradient NaN
        elif kind == "poison":
            with torch.no_grad():
                self.net[2].bias.fill_(float("nan"))  # the bias is not saved for backward
        return SimpleNamespace(loss=loss)


def _weights(model: FaultyModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.net.named_parameters()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train(model: FaultyModel, *, steps: int = 10, ckpt: Path | None = None, save_every: int | None = None,
           **kw):
    cfg = TrainConfig(max_steps=steps, batch_size=6, lr=1e-2, warmup_ratio=0.0, log_every=1)
    return train_supervised(model, _items(), _collate, cfg, seed=3, accelerator=Accelerator(cpu=True),
                            checkpoint_dir=ckpt, save_every=save_every, description="toy", **kw)


@pytest.mark.parametrize("kind", ["nan", "inf", "-inf", "grad"])
def test_a_non_finite_batch_is_logged_and_skipped(kind, caplog):
    model = FaultyModel({3: kind})
    with caplog.at_level(logging.WARNING, logger="mmboundary.training"):
        summary = _train(model, steps=6)
    assert model.calls == 6 and summary["skipped_nonfinite"] == 1
    assert not _equal(model.seen[1], model.seen[2])  # step 2 was applied ...
    assert _equal(model.seen[2], model.seen[3])      # ... step 3 was not
    assert not _equal(model.seen[3], model.seen[4])  # and training went on
    assert all(torch.isfinite(p).all() for p in _weights(model).values())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    reason = "non-finite gradient norm" if kind == "grad" else "non-finite loss"
    assert "toy step 3:" in warnings[0] and reason in warnings[0] and "batch skipped" in warnings[0]


def test_faults_not_in_a_row_do_not_stop_training():
    model = FaultyModel({2: "nan", 4: "inf", 6: "grad", 8: "nan"})
    summary = _train(model, steps=10, max_nonfinite_in_a_row=2)
    assert summary["skipped_nonfinite"] == 4 and model.calls == 10
    for bad in (2, 4, 6, 8):
        assert _equal(model.seen[bad - 1], model.seen[bad])  # the weights before and after step `bad`


def test_without_a_limit_every_bad_batch_is_skipped_and_training_ends():
    model = FaultyModel({k: "nan" for k in range(1, 7)})
    summary = _train(model, steps=6, max_nonfinite_in_a_row=None)
    assert summary["skipped_nonfinite"] == 6 and summary["loss_curve"] == []
    assert _equal(_weights(model), model.seen[0])  # never updated


def test_too_many_in_a_row_stop_with_the_last_checkpoint_intact(tmp_path):
    ckpt = tmp_path / "checkpoints"
    model = FaultyModel({6: "nan", 7: "grad", 8: "inf"})
    with pytest.raises(NonFiniteError) as e:
        _train(model, steps=12, ckpt=ckpt, save_every=4, max_nonfinite_in_a_row=3)
    msg = str(e.value)
    assert "toy: stopped at step 8/12" in msg and "3 batches in a row" in msg
    assert str(ckpt / "step-4") in msg and "left intact" in msg
    assert model.calls == 8  # stopped at once
    # the checkpoint is the one written after step 4, whole, with the weights of that moment
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-4"]
    saved = load_file(str(ckpt / "step-4" / "trainable.safetensors"))
    assert _equal({k.removeprefix("net."): v for k, v in saved.items()}, model.seen[4])
    state = torch.load(ckpt / "step-4" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 4 and state["skipped"] == 0
    # once the cause is gone, resuming from it gives the weights of a run that never faulted
    resumed = FaultyModel()
    summary = _train(resumed, steps=12, ckpt=ckpt, save_every=4)
    assert summary["resumed_from"] == "step-4" and summary["skipped_nonfinite"] == 0
    clean = FaultyModel()
    _train(clean, steps=12)
    assert _equal(_weights(resumed), _weights(clean))


def test_broken_weights_never_replace_the_last_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoints"
    model = FaultyModel({8: "poison"})
    with pytest.raises(NonFiniteError) as e:
        _train(model, steps=12, ckpt=ckpt, save_every=4)
    assert "toy: step 8: non-finite weights (net.2.bias)" in str(e.value)
    assert str(ckpt / "step-4") in str(e.value)
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-4"]
    saved = load_file(str(ckpt / "step-4" / "trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_the_limit_is_checked_and_the_error_is_the_projects_own():
    with pytest.raises(ValueError, match="max_nonfinite_in_a_row"):
        _train(FaultyModel(), steps=2, max_nonfinite_in_a_row=0)
    assert issubclass(NonFiniteError, MMBoundaryError)


# --- PPO: a NaN minibatch in ppo_update ----------------------------------------------------------

import test_rl  # noqa: E402
from test_rl import _scored_batch  # noqa: E402

ctx, examples, tokenizer = test_rl.ctx, test_rl.examples, test_rl.tokenizer  # test_rl's fixtures, used here


def _ppo_setup(examples, tokenizer, ctx):
    from mmboundary.training.rl_config import RLConfig

    cfg = RLConfig(minibatch_size=1, ppo_epochs=1)
    batch, pv, policy = _scored_batch(examples, tokenizer, ctx, cfg, 0.05)
    assert len(batch) == 2
    return cfg, batch, pv, policy


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("nan_samples", [[0], [0, 1]])
def test_ppo_update_skips_a_nan_minibatch(examples, tokenizer, ctx, nan_samples):
    """One minibatch per sample: a NaN advantage makes that minibatch's loss NaN; it is skipped
    and counted, the other one is applied; with both NaN, no weight and no optimiser state
    changes. The control (no NaN) shows an update does change the weights."""
    from mmboundary.training.ppo import ppo_update

    cfg, batch, pv, policy = _ppo_setup(examples, tokenizer, ctx)
    before = _state(pv)
    for i in nan_samples:
        batch.advantages[i] = float("nan")
    opt = torch.optim.AdamW(pv.parameters(), lr=1e-2)
    out = ppo_update(pv, policy, batch, cfg, None, opt)
    after = _state(pv)
    assert out["nonfinite_skipped"] == len(nan_samples)
    assert out["optimizer_steps"] == 2 - len(nan_samples)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    if len(nan_samples) == 2:
        assert _equal(before, after)
        assert not opt.state  # AdamW never stepped: no moments taken from a NaN gradient
    else:
        assert not _equal(before, after)


def test_ppo_update_without_nan_changes_the_weights(examples, tokenizer, ctx):
    from mmboundary.training.ppo import ppo_update

    cfg, batch, pv, policy = _ppo_setup(examples, tokenizer, ctx)
    before = _state(pv)
    out = ppo_update(pv, policy, batch, cfg, None, torch.optim.AdamW(pv.parameters(), lr=1e-2))
    assert out["nonfinite_skipped"] == 0 and out["optimizer_steps"] == 2
    assert not _equal(before, _state(pv))


def test_ppo_update_skips_a_nan_gradient_and_stops_after_the_limit(examples, tokenizer, ctx):
    """A finite loss whose gradient is NaN (a hook poisons it) is skipped like a NaN loss; with
    `max_nonfinite_in_a_row` = 2 the second bad step in a row stops the update."""
    from mmboundary.training.ppo import ppo_update
    from mmboundary.training.rl_config import RLConfig
    from mmboundary.training.rl_update import TooManyNonFinite

    cfg, batch, pv, policy = _ppo_setup(examples, tokenizer, ctx)
    param = next(p for p in pv.parameters() if p.requires_grad)
    handle = param.register_hook(lambda g: g * float("nan"))
    before = _state(pv)
    opt = torch.optim.AdamW(pv.parameters(), lr=1e-2)
    out = ppo_update(pv, policy, batch, cfg.model_copy(update={"max_nonfinite_in_a_row": None}), None, opt)
    assert out["nonfinite_skipped"] == 2 and out["optimizer_steps"] == 0
    assert _equal(before, _state(pv)) and not opt.state
    with pytest.raises(TooManyNonFinite):
        ppo_update(pv, policy, batch, cfg.model_copy(update={"max_nonfinite_in_a_row": 2}), None, opt)
    handle.remove()
    assert RLConfig().max_nonfinite_in_a_row == 3


def test_a_sample_with_nan_log_probs_is_left_out_of_the_batch(examples, tokenizer, ctx):
    """prepare_batch: a sample whose log-probs are NaN becomes inactive (no loss reads it) and
    every tensor of the batch stays finite, so whitening does not spread the NaN."""
    import dataclasses

    from mmboundary.training.ppo import prepare_batch
    from mmboundary.training.rl_config import RLConfig

    cfg = RLConfig()
    batch, _, _ = _scored_batch(examples, tokenizer, ctx, cfg, 0.05)
    samples = list(batch.samples)
    r = samples[0].rollout
    bad = r.logprobs.clone()
    bad[1] = float("nan")
    samples[0] = dataclasses.replace(samples[0], rollout=r.with_(logprobs=bad))
    again = prepare_batch(samples, cfg, 0.05)
    assert not again.samples[0].active and again.samples[1].active
    assert not again.value_mask[0].any() and again.value_mask[1].any()
    for name in ("advantages", "returns", "rewards", "old_logprobs", "ref_logprobs"):
        assert torch.isfinite(getattr(again, name)).all(), name
