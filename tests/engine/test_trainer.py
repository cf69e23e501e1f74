"""The one training loop with a task of a user's own (a toy regression): hooks, the best checkpoint
by a metric to minimise, loss terms in the metrics, exact resume, a wrong checkpoint refused."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset, default_collate

from botnet.config import TrainConfig, apply_overrides
from botnet.engine import Callback, Task, TaskData, Trainer
from botnet.checkpoint import load_checkpoint
from botnet.engine.metrics import read_jsonl


def _collate(batch):
    x, y = default_collate(batch)
    return x, y, 0


class Regression(Task):
    """y = x . w + noise, fitted by a linear layer; two loss terms."""

    name = "regression"
    best_metric = "mse"
    best_mode = "min"

    def build_data(self) -> TaskData:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 4, generator=g)
        y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(96, generator=g)
        return TaskData(TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:]), _collate)

    def build_model(self, data):
        return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))

    def total_steps(self, steps_per_epoch):
        return self.cfg.optim.epochs * steps_per_epoch

    def loss_terms(self, model, x, y, device):
        pred = model(x.to(device))[:, 0]
        return {"loss_mse": F.mse_loss(pred, y.to(device)), "loss_l1": 0.1 * F.l1_loss(pred, y.to(device))}

    @torch.no_grad()
    def evaluate(self, model, loader, run):
        model.eval()
        err, n = 0.0, 0
        for x, y, _ in loader:
            err += float(((model(x)[:, 0] - y) ** 2).sum())
            n += len(x)
        return {"mse": err / n, "count": n, "skipped_images": 0}


class Record(Callback):
    def __init__(self):
        self.events = []

    def before_train(self, trainer):
        self.events.append(("before", trainer.state.step))

    def after_step(self, trainer, terms):
        self.events.append(("step", trainer.state.step, sorted(terms)))

    def after_epoch(self, trainer, record):
        self.events.append(("epoch", record["epoch"]))

    def after_eval(self, trainer, record):
        self.events.append(("eval", record["mse"]))

    def after_train(self, trainer, result):
        self.events.append(("after", result["step"]))


def _cfg(out, *overrides):
    cfg = TrainConfig(name="reg")
    apply_overrides(cfg, ["model.name=linear", "optim.batch_size=16", "optim.epochs=3", "optim.lr=0.01",
                          "data.workers=0", "run.amp=none", "run.log_every=1", f"run.output={out}", *overrides])
    return cfg


def _steps(out):
    return [(r["step"], r["loss"], r["loss_mse"], r["loss_l1"]) for r in read_jsonl(out / "metrics.jsonl")
            if r["kind"] == "step"]


def test_own_task_hooks_and_best_checkpoint(tmp_path):
    rec = Record()
    result = Trainer(Regression(_cfg(tmp_path / "r")), callbacks=[rec]).fit()
    assert result["step"] == 12 and result["count"] == 32
    kinds = [e[0] for e in rec.events]
    assert kinds[0] == "before" and kinds[-1] == "after"
    assert kinds.count("step") == 12 and kinds.count("epoch") == 3 and kinds.count("eval") == 3
    assert rec.events[1][2] == ["loss", "loss_l1", "loss_mse"]
    steps = _steps(tmp_path / "r")
    assert all(loss == pytest.approx(mse + l1) for _, loss, mse, l1 in steps)
    evals = [e[1] for e in rec.events if e[0] == "eval"]
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert best["kind"] == "regression" and best["best_score"] == min(evals) and best["metrics"]["mse"] == min(evals)
    assert evals[-1] < evals[0]  # it learns


def test_own_task_resumes_exactly_and_refuses_other_checkpoints(tmp_path):
    Trainer(Regression(_cfg(tmp_path / "full"))).fit()
    Trainer(Regression(_cfg(tmp_path / "part", "run.max_steps=6"))).fit()  # stops mid-epoch 1
    assert load_checkpoint(tmp_path / "part" / "last.pt")["step_in_epoch"] == 2
    Trainer(Regression(_cfg(tmp_path / "part")), resume="auto").fit()
    a, b = _steps(tmp_path / "full"), _steps(tmp_path / "part")
    assert [s[0] for s in b] == list(range(1, 13))
    assert [v for s in b for v in s[1:]] == pytest.approx([v for s in a for v in s[1:]], rel=1e-6)

    class Other(Regression):
        name = "other"

    with pytest.raises(ValueError, match="is not a other checkpoint"):
        Trainer(Other(_cfg(tmp_path / "part")), resume=str(tmp_path / "part" / "last.pt")).fit()


def test_botnet_train_checks_the_recipe_once(monkeypatch, tmp_path):
    """``task.check()`` (for classification: the model built on the meta device) runs once per
    ``botnet train``, in ``Trainer.fit``; a failing check still exits 2 with one line."""
    import botnet.engine.trainer as trainer
    from botnet.cli import main
    from botnet.engine.classify import ClassificationTask

    calls = []
    real_check = ClassificationTask.check
    monkeypatch.setattr(ClassificationTask, "check", lambda self: calls.append(1) or real_check(self))
    monkeypatch.setattr(trainer, "launch", lambda run_cfg, body: {})  # stop before any work
    assert main(["train", "--config", "demo", "--output", str(tmp_path / "o"), "model.name=botnet_tiny"]) == 0
    assert len(calls) == 1
    assert main(["train", "--config", "demo", "--output", str(tmp_path / "o"), "model.name=botnet_nope"]) == 2
    assert len(calls) == 2


def test_channels_last_is_applied_to_the_model_and_its_inputs():
    from botnet.engine.launch import to_channels_last

    seen = []
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    model[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    to_channels_last(model)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    model(torch.randn(2, 3, 8, 8))
    assert seen == [True]
