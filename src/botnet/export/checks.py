"""Comparing an exported detector's detections with PyTorch's (``check_detections``) and the
result record of a detector export (``export_result``); used by ``botnet.export.detection``."""

from __future__ import annotations

import time

import torch

from .core import ATOL, ExportError, ExportResult, compare_outputs

__all__ = ["check_detections", "export_result"]


def check_detections(got: dict, ref: dict, keys, limits: tuple[float, int], atol: float, rtol: float, what: str) -> dict:
    """Compare one image's detections (dicts of tensors) with PyTorch's; raise ExportError on a mismatch.

    Detection i of PyTorch is matched to detection i of the export when both have the same label
    and their box and score are within tolerance (``atol + rtol * max |PyTorch output|``); only
    when that fails, to another unmatched detection j with the same label, box and score, and only
    if PyTorch's detection j scores within the tolerance of detection i. So the order may differ
    only among detections whose scores differ by less than the tolerance: their order comes from
    float rounding (two scores 1.5e-8 apart came out swapped in ONNX Runtime on a random BoT50
    Mask R-CNN). For the same reason, a detection whose score is within the tolerance of the
    score threshold, or of the lowest kept score when ``detections_per_img`` are kept, may be
    missing on either side. Everything else must match one to one, masks included.

    Returns {"detections": N, "max_abs_diff": {key: d}, "tolerance": {key: t}, "reordered": n,
    "borderline": n}."""
    keys = [k for k in keys if k != "labels"]
    ref = {k: v.detach().cpu() for k, v in ref.items()}
    got = {k: torch.as_tensor(v).detach().cpu() for k, v in got.items()}
    n_ref, n_got = len(ref["scores"]), len(got["scores"])
    rec = {"detections": n_ref, "max_abs_diff": {}, "tolerance": {}, "reordered": 0, "borderline": 0}
    if n_got != n_ref:
        rec["detections_export"] = n_got
    if n_ref == 0 and n_got == 0:
        return rec
    scale = {k: float(ref[k].abs().max()) if n_ref else float(got[k].abs().max()) for k in ("boxes", "scores")}
    tol_s, tol_b = atol + rtol * scale["scores"], atol + rtol * scale["boxes"]
    s_ref, s_got = ref["scores"].double(), got["scores"].double()
    ok = ((s_ref[:, None] - s_got[None, :]).abs() <= tol_s) & (ref["labels"].long()[:, None] == got["labels"].long()[None, :])
    box_diff = (ref["boxes"].double()[:, None] - got["boxes"].double()[None, :]).abs().amax(-1) if n_ref and n_got \
        else torch.zeros(n_ref, n_got, dtype=torch.float64)
    ok &= box_diff <= tol_b
    # detection i may sit at place j != i only when PyTorch's detection j has a score tied with i's
    m = min(n_ref, n_got)
    ok[:, :m] &= (s_ref[:, None] - s_ref[None, :m]).abs() <= tol_s
    pairs, used = [], torch.zeros(n_got, dtype=torch.bool)
    for i in range(n_ref):
        if i < n_got and ok[i, i] and not used[i]:
            j = i
        else:
            cand = (ok[i] & ~used).nonzero().flatten()
            if len(cand) == 0:
                continue
            j = int(cand[box_diff[i, cand].argmin()])
        used[j] = True
        pairs.append((i, j))
    thresh, max_dets = limits

    def borderline(scores: torch.Tensor, idx: int) -> bool:
        s = float(scores[idx])
        return abs(s - thresh) <= tol_s or (len(scores) >= max_dets and abs(s - float(scores.min())) <= tol_s)

    matched_ref = {i for i, _ in pairs}
    for side, scores, unmatched in (("PyTorch", s_ref, [i for i in range(n_ref) if i not in matched_ref]),
                                    ("the export", s_got, (~used).nonzero().flatten().tolist())):
        for i in unmatched:
            if not borderline(scores, i):
                src = ref if side == "PyTorch" else got
                other = "the export" if side == "PyTorch" else "PyTorch"
                box = [round(float(v), 2) for v in src["boxes"][i]]
                raise ExportError(
                    f"{what}: {n_got} detections, PyTorch {n_ref}; detection {i} of {side} (label {int(src['labels'][i])}, "
                    f"score {float(scores[i]):.4g}, box {box}) has none in {other} with the same label and box and score "
                    f"within {tol_b:.3g} and {tol_s:.3g}")
            rec["borderline"] += 1
    rec["reordered"] = sum(i != j for i, j in pairs)
    if not pairs:
        return rec
    ri, gi = torch.tensor([i for i, _ in pairs]), torch.tensor([j for _, j in pairs])
    for k in keys:
        a, b = got[k][gi], ref[k][ri]
        if tuple(a.shape) != tuple(b.shape):
            raise ExportError(f"{what}: {k} of shape {tuple(got[k].shape)}, PyTorch {tuple(ref[k].shape)}")
        if k in ("boxes", "scores"):  # within tolerance by the matching
            diff, tol = float((a.double() - b.double()).abs().max()), (tol_b if k == "boxes" else tol_s)
        else:
            diff, tol = compare_outputs(a, b, atol, rtol, f"{what}: {k}")
        rec["max_abs_diff"][k], rec["tolerance"][k] = diff, tol
    return rec


def _summary(checks: list[dict]) -> tuple[float, float, str | None]:
    """(max abs diff, its tolerance, which output) of the output closest to its tolerance."""
    worst, best_ratio = (0.0, ATOL, None), -1.0
    for c in checks:
        for k, d in c["max_abs_diff"].items():
            ratio = d / c["tolerance"][k]
            if ratio > best_ratio:
                best_ratio, worst = ratio, (d, c["tolerance"][k], f"{k} on {c['image']}")
    return worst


def export_result(path, fmt, size, checks, t0, extra) -> ExportResult:
    diff, tol, worst = _summary(checks) if checks else (None, None, None)
    extra = {**extra, "checks": checks}
    if checks:
        extra["worst"] = worst
    return ExportResult(str(path), fmt, (3, size, size), diff, tol, time.perf_counter() - t0, extra)
