"""The engine-agnostic fault handlers: preemption flag, non-finite guard, torn logs."""

import math
import os
import signal

import pytest
import torch
from torch import nn

from botnet.engine.distributed import DistInfo, DistributedError, comm_failures_as_errors, flags_by_rank, is_comm_failure
from botnet.engine.metrics import drop_torn_jsonl_tail
from botnet.engine.faults import (NonFiniteError, NonFiniteGuard, PreemptionHandler,
                                  ignore_preemption_signals, nonfinite_tensors)

DETECTION_TERMS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 2 * 2, 2))


def _step(model, x):
    out = model(x)
    loss = out.square().mean()
    loss.backward()
    return loss


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1"])
def test_preemption_signal_sets_a_flag_and_handlers_are_restored(name):
    sig = getattr(signal, name)
    before = signal.getsignal(sig)
    with PreemptionHandler() as pre:
        assert not pre.requested and not pre.should_stop()
        os.kill(os.getpid(), sig)  # would end the process without the handler
        assert pre.requested and pre.signal_name == name and pre.should_stop()
        os.kill(os.getpid(), sig)  # a second one changes nothing
        assert pre.signal_name == name
    assert signal.getsignal(sig) is before
    pre = PreemptionHandler(signals=())
    pre.request()
    assert pre.should_stop(DistInfo()) and pre.signal_name == "manual"


def test_worker_init_ignores_preemption_signals():
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        ignore_preemption_signals(0)
        assert all(signal.getsignal(s) is signal.SIG_IGN for s in old)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_finite_steps_pass():
    model, guard = _model(), NonFiniteGuard()
    loss = _step(model, torch.randn(2, 3, 2, 2))
    assert guard.check(1, {"loss": loss}, model) is True and guard.skipped == 0
    assert flags_by_rank(True, DistInfo()) == [True]


def test_nan_loss_names_the_step_and_every_term():
    model, guard = _model(), NonFiniteGuard(max_skips=0)
    _step(model, torch.randn(2, 3, 2, 2))
    terms = {n: torch.tensor(0.5 + i) for i, n in enumerate(DETECTION_TERMS)}
    terms["loss_box_reg"] = torch.tensor(float("nan"))
    terms["loss_mask"] = torch.tensor(float("inf"))
    with pytest.raises(NonFiniteError) as info:
        guard.check(17, terms, model, epoch=3)
    msg = str(info.value)
    assert msg.startswith("non-finite loss at step 17 (epoch 3): loss terms loss_classifier=0.5, loss_box_reg=nan, "
                          "loss_mask=inf, loss_objectness=3.5, loss_rpn_box_reg=4.5")
    assert "run.max_nonfinite_skips=0" in msg
    e = info.value
    assert (e.step, e.epoch) == (17, 3) and math.isnan(e.terms["loss_box_reg"]) and e.terms["loss_objectness"] == 3.5
    assert isinstance(e, FloatingPointError)


def test_nan_gradient_names_the_parameters():
    model, guard = _model(), NonFiniteGuard()
    loss = _step(model, torch.randn(2, 3, 2, 2))
    model[3].weight.grad[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"non-finite gradient at step 5: loss terms loss=[0-9.]+; non-finite "
                                             r"gradients in 1 parameter\(s\): 3\.weight") as info:
        guard.check(5, {"loss": loss}, model)
    assert info.value.bad_params == ["3.weight"]
    # gradients are not checked under a GradScaler (it skips inf steps itself)
    assert NonFiniteGuard(check_grads=False).check(5, {"loss": loss}, model) is True


def test_skip_budget_restores_buffers_and_zeroes_gradients(caplog):
    model, guard = _model(), NonFiniteGuard(max_skips=2)
    params = [p.detach().clone() for p in model.parameters()]
    mean_before = model[1].running_mean.clone()
    caplog.set_level("WARNING")
    for step in (1, 2):
        guard.begin_step(model)
        loss = _step(model, torch.full((2, 3, 2, 2), float("nan")))  # a poisoned batch: NaN BN statistics too
        assert guard.check(step, {"loss": loss}, model) is False
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(model[1].running_mean, mean_before) and not nonfinite_tensors(model)
    assert guard.skipped == 2 and guard.state_dict() == {"skipped": 2}
    assert "skipping optimizer step: non-finite loss at step 2" in caplog.text and "skip 2 of 2" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    guard.begin_step(model)
    loss = _step(model, torch.full((2, 3, 2, 2), float("nan")))
    with pytest.raises(NonFiniteError, match="2 skipped step.s. allowed .run.max_nonfinite_skips. were already used"):
        guard.check(3, {"loss": loss}, model)
    resumed = NonFiniteGuard(max_skips=2)
    resumed.load_state_dict({"skipped": 2})
    assert resumed.skipped == 2
    with pytest.raises(ValueError, match="max_skips"):
        NonFiniteGuard(max_skips=-1)


def test_float_terms_and_no_model():
    guard = NonFiniteGuard(max_skips=1)
    assert guard.check(1, {"a": 1.0, "b": torch.tensor(2.0, dtype=torch.bfloat16)}) is True
    assert guard.check(2, {"a": float("-inf")}) is False
    assert guard.check(3, {}) is True


def test_nonfinite_tensors():
    sd = {"a": torch.ones(2), "b": {"c": torch.tensor([1.0, float("inf")]), "n": torch.tensor([3])},
          "l": [torch.tensor(float("nan")), 4], "s": "x"}
    assert nonfinite_tensors(sd) == ["b.c", "l.0"]
    m = nn.Linear(2, 2)
    with torch.no_grad():
        m.bias[0] = float("nan")
    assert nonfinite_tensors(m) == ["bias"]


def test_torn_jsonl_tail(tmp_path):
    p = tmp_path / "m.jsonl"
    assert drop_torn_jsonl_tail(p) is False
    p.write_text('{"step": 1}\n{"step": 2}\n')
    assert drop_torn_jsonl_tail(p) is False
    p.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert drop_torn_jsonl_tail(p) is True and p.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_comm_failures_are_recognised():
    gloo_reset = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:9143: "
                              "Connection reset by peer")
    gloo_timeout = RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv operation")
    assert is_comm_failure(gloo_reset) and is_comm_failure(gloo_timeout)
    assert not is_comm_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_comm_failure(ValueError("gloo"))
    assert not is_comm_failure(RuntimeError("DataLoader timed out after 5 seconds"))


def test_comm_failures_become_one_line_distributed_errors():
    two = DistInfo(rank=1, world_size=2)
    with pytest.raises(DistributedError, match=r"^rank 1: a collective with the other ranks failed: another rank died, "
                                               r"or did not answer within run.dist_timeout_s=30 s \(\[gloo\] Timed out"):
        with comm_failures_as_errors(two, 30.0):
            raise RuntimeError("[gloo] Timed out waiting 30000ms for recv operation\nmore detail")
    with pytest.raises(RuntimeError, match="shapes"), comm_failures_as_errors(two, 30.0):
        raise RuntimeError("shapes cannot be multiplied")
    with pytest.raises(RuntimeError, match="gloo"), comm_failures_as_errors(DistInfo(), 30.0):  # single process
        raise RuntimeError("gloo")


def test_verdict_of_another_rank_is_followed(monkeypatch):
    """Under DDP the verdict is all-reduced: a rank with finite values skips or stops with the others."""
    import botnet.engine.faults as faults

    monkeypatch.setattr(faults, "flags_by_rank", lambda flag, dist, device=None: [flag, True])
    model, guard = _model(), NonFiniteGuard(max_skips=1)
    loss = _step(model, torch.randn(2, 3, 2, 2))
    two = DistInfo(rank=0, world_size=2)
    assert guard.check(2, {"loss": loss}, model, dist=two) is False and all(p.grad is None for p in model.parameters())
    loss = _step(model, torch.randn(2, 3, 2, 2))
    with pytest.raises(NonFiniteError, match=r"^non-finite loss or gradient on another rank at step 3: loss terms "
                                             r"loss=[0-9.]+; seen on rank\(s\) 1 \(this is rank 0\)") as info:
        guard.check(3, {"loss": loss}, model, dist=two)
    assert info.value.ranks == [1]
