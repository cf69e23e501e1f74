"""``botnet experiment report``: one row per run of an experiment folder, beside the paper's.

Columns: the run, its status (done / unfinished / failed / pending: no run is left out), the step it
reached, the final evaluation (top-1/top-5/loss, or COCO AP), parameters and multiply-adds
(``botnet.counter``; for detectors those of the backbone), the measured training step time (median
over the logged steps after the first, data loading included) and, where the run names a paper row,
the paper's number and step time in their own columns. Writes ``report.md``, ``report.csv`` and
``speed_accuracy.png`` (step time against the metric; the paper's points in a panel beside).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import yaml

from ..engine.metrics import read_jsonl
from ..paper import PAPER_CAPTIONS, paper_result
from .runner import read_plan, run_status
from .spec import Experiment, RunSpec
from ..counter import profile_model
from ..detection.builders import parse_detector_name
from ..checkpoint import checkpoint_of, load_checkpoint
from ..data.builtin import BUILTIN_CLASSES
from ..config import apply_overrides, config_from_dict, config_to_dict, read_recipe, recipe_task
from ..engine.task import get_task

__all__ = ["collect", "write_report", "run_config", "COLUMNS"]

_METRICS = {"classification": ("top1", "top5", "loss"), "detection": ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50")}
COLUMNS = ("run", "status", "step", "model", "top1", "top5", "loss", "bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50",
           "params_m", "madds_g",
           "step_ms", "paper_table", "paper_row", "paper_metric", "paper_value", "paper_step_ms")


def _counts(cfg: dict, run_dir: Path) -> tuple[float | None, float | None]:
    """(params in millions, M.Adds in 1e9) of the run's model at its training size (backbone for
    detection; the classifier's head sized to the run's classes when a checkpoint says them)."""

    model, data = cfg.get("model", {}), cfg.get("data", {})
    try:
        if cfg.get("task", "classification") == "detection":

            backbone = parse_detector_name(model["name"])[1]
            prof = profile_model(backbone, data.get("img_size"), **model.get("backbone_kwargs", {}))
        else:
            kwargs = dict(model.get("kwargs", {}))
            classes = _classes(run_dir, data)
            if classes:
                kwargs["num_classes"] = classes
            prof = profile_model(model["name"], data.get("img_size"), **kwargs)
    except (KeyError, TypeError, ValueError, RuntimeError):  # a model the counter cannot build: no counts
        return None, None
    return prof.params / 1e6, prof.madds / 1e9


def _classes(run_dir: Path, data: dict) -> int | None:
    """The run's number of classes: its checkpoint's, else its data folder's (ROOT/train/<class>/),
    else the built-in shapes' when it trains on them; None when unknown."""
    path = run_dir / "last.pt"
    if not path.is_file():
        root = data.get("root")
        if root is None and data.get("builtin", "shapes") == "shapes":

            return len(BUILTIN_CLASSES)
        train = Path(str(root)) / "train"
        return sum(1 for p in train.iterdir() if p.is_dir()) or None if train.is_dir() else None

    try:
        ckpt = checkpoint_of(load_checkpoint(path, verify=False, mmap=True), path)
    except Exception:  # a damaged last.pt: the counts fall back to the model's default head
        return None
    return len(ckpt.classes or []) or None


def _step_ms(recs: list[dict], batch: int) -> float | None:
    times = [1000.0 * batch / r["images_per_s"] for r in recs if r["kind"] == "step" and r.get("images_per_s")]
    times = times[1:] if len(times) > 1 else times
    return statistics.median(times) if times else None


def run_config(run: RunSpec, run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if path.is_file():
        return yaml.safe_load(path.read_text()) or {}

    recipe = read_recipe(run.base) if run.base is not None else {}  # parsed once
    task = recipe_task(recipe, list(run.overrides))
    cfg = config_from_dict(recipe, get_task(task).config_class)
    apply_overrides(cfg, [o for o in run.overrides if not o.startswith("task=")])
    return {**config_to_dict(cfg), "task": task}


def collect(out: str | Path) -> tuple[Experiment, list[dict]]:
    """The experiment planned in ``out`` and one row (``COLUMNS``) per run."""
    out = Path(out)
    exp = read_plan(out)
    rows = []
    for run in exp.runs:
        d = out / run.name
        cfg = run_config(run, d)
        recs = read_jsonl(d / "metrics.jsonl") if (d / "metrics.jsonl").is_file() else []
        row = dict.fromkeys(COLUMNS)
        row.update(run=run.name, status=run_status(d), model=cfg.get("model", {}).get("name"),
                   step=max((r["step"] for r in recs), default=0))
        if row["status"] == "done":
            final = json.loads((d / "result.json").read_text())["eval"]
            row.update({k: final.get(k) for k in _METRICS["classification"] + _METRICS["detection"]})
        row["params_m"], row["madds_g"] = _counts(cfg, d)
        row["step_ms"] = _step_ms(recs, cfg.get("optim", {}).get("batch_size", 1))
        if run.paper is not None:
            row["paper_table"], row["paper_row"] = run.paper
            found = paper_result(*run.paper)
            if found is not None:
                row["paper_metric"] = exp.paper_metric
                row["paper_value"] = found.metrics.get(exp.paper_metric) if exp.paper_metric else None
                row["paper_step_ms"] = found.step_ms
        rows.append(row)
    return exp, rows


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return ""
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _used_columns(rows: list[dict]) -> list[str]:
    return [c for c in COLUMNS if c in ("run", "status") or any(r.get(c) is not None for r in rows)]


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else (round(r[k], 6) if isinstance(r[k], float) else r[k])) for k in COLUMNS})
    return buf.getvalue()


def to_markdown(exp: Experiment, rows: list[dict]) -> str:
    cols = _used_columns(rows)
    head = {"params_m": "params (M)", "madds_g": "M.Adds (G)", "step_ms": "step (ms, measured)",
            "paper_value": f"paper's {exp.paper_metric or 'value'}", "paper_step_ms": "paper's step (ms, TPU-v3)",
            "paper_row": "paper's row", "paper_table": "paper's table", "paper_metric": "paper's metric"}
    lines = [f"# Experiment {exp.name}", ""]
    if exp.description:
        lines += [exp.description, ""]
    tables = sorted({r["paper_table"] for r in rows if r["paper_table"]})
    for t in tables:
        lines.append(f"Paper: {PAPER_CAPTIONS.get(t, 'Table ' + t)}. Its numbers are the paper's, not measured here.")
    lines += ["" if tables else "", "| " + " | ".join(head.get(c, c) for c in cols) + " |",
              "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c], 3 if c == "madds_g" else 2) for c in cols) + " |")
    left = [r["run"] for r in rows if r["status"] != "done"]
    if left:
        lines += ["", f"Not finished: {', '.join(f'{r} ({s})' for r, s in ((r['run'], r['status']) for r in rows if r['status'] != 'done'))}."]
    return "\n".join(lines) + "\n"


def plot(exp: Experiment, rows: list[dict], png: Path) -> Path:
    """Step time against ``exp.metric`` per run (left) and the paper's rows (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paper = [r for r in rows if r["paper_value"] is not None]
    fig, axes = plt.subplots(1, 2 if paper else 1, figsize=(12 if paper else 6.5, 4.8), squeeze=False)
    ax = axes[0][0]
    for r in rows:
        y, x = r.get(exp.metric), r["step_ms"]
        if y is None or x is None:
            continue
        ax.plot(x, y, "o", ms=7)
        ax.annotate(r["run"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("training step time (ms, measured here)")
    ax.set_ylabel(f"{exp.metric} (this experiment)")
    ax.set_title(f"{exp.name}: runs (unfinished runs not drawn)", fontsize=10)
    ax.grid(alpha=0.3)
    if paper:
        ax = axes[0][1]
        own = all(r["paper_step_ms"] is not None for r in paper)
        for r in paper:
            x = r["paper_step_ms"] if own else r["step_ms"]
            if x is None:
                continue
            ax.plot(x, r["paper_value"], "s", ms=7, color="gray")
            ax.annotate(r["paper_row"], (x, r["paper_value"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("the paper's step time (ms, TPU-v3)" if own else "step time measured here (the paper gives none)")
        ax.set_ylabel(f"the paper's {exp.paper_metric}")
        ax.set_title("the paper's numbers for the same rows", fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def write_report(out: str | Path) -> dict:
    """Write ``report.md``, ``report.csv`` and ``speed_accuracy.png`` into ``out``; returns
    {"markdown", "csv", "plot", "rows"}."""
    out = Path(out)
    exp, rows = collect(out)
    md, table = to_markdown(exp, rows), to_csv(rows)
    (out / "report.md").write_text(md)
    (out / "report.csv").write_text(table)
    png = plot(exp, rows, out / "speed_accuracy.png")
    return {"markdown": md, "csv": table, "plot": str(png), "rows": rows}
