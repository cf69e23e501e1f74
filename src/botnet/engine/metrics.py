"""Run logging: JSONL records, TensorBoard scalars, a progress bar (plain lines off a terminal),
and a PNG of the loss / accuracy curves. Only the main process writes."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

__all__ = ["MetricsLogger", "plot_curves", "read_jsonl", "get_logger", "drop_torn_jsonl_tail"]


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each record (not as it was when the logger was made), so
    a redirected or replaced stderr (pytest's capture, a notebook) never gets a closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def get_logger() -> logging.Logger:
    log = logging.getLogger("botnet")
    if not log.handlers:
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
    return log


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class MetricsLogger:
    """``log(record)`` appends one JSON line to ``metrics.jsonl`` and sends its numbers to TensorBoard
    under ``<kind>/<key>``; records carry ``kind`` ("step", "epoch", "eval") and ``step``."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out_dir) / "tb"))

    def truncate_after(self, step: int) -> None:
        """On resume: drop records written after the checkpoint's step (they will be redone)."""
        if self.enabled and self.path.exists():
            keep = [r for r in read_jsonl(self.path) if r["step"] <= step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


_CLS_METRICS = (("top1", "val top-1"), ("top5", "val top-5"), ("ema_top1", "val top-1 (EMA)"))


def plot_curves(metrics_path: str | Path, out_png: str | Path, title: str = "", metrics=_CLS_METRICS,
                x: str = "epoch", ylabel: str = "accuracy (%)") -> Path:
    """Training loss per step and validation loss (left); the eval ``metrics`` (key, label) against
    ``x`` (right; default: top-1/top-5 per epoch), from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_jsonl(metrics_path)
    steps = [r for r in recs if r["kind"] == "step"]
    evals = [r for r in recs if r["kind"] == "eval"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1, label="train loss (per step)")
    if evals:
        pts = [(r["step"], r["loss"]) for r in evals if "loss" in r]
        if pts:
            ax.plot(*zip(*pts), "o-", label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[1]
    for key, label in metrics:
        pts = [(r[x], r[key]) for r in evals if key in r]
        if pts:
            ax.plot(*zip(*pts), "o-", label=label)
    ax.set_xlabel("optimizer step" if x == "step" else x)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def drop_torn_jsonl_tail(path) -> bool:
    """Cut a JSONL file back to its last complete line (a kill can leave half a line).
    Returns True when something was removed."""
    path = Path(path)
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    keep = data[: data.rfind(b"\n") + 1]
    path.write_bytes(keep)
    return True
