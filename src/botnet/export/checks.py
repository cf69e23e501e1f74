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
    pairs, used = _match(got, ref, tol_s, tol_b)
    rec["borderline"] = _check_unmatched(got, ref, pairs, used, limits, tol_s, tol_b, what)
    rec["reordered"] = sum(i != j for i, j in pairs)
    if pairs:
        ri, gi = torch.tensor([i for i, _ in pairs]), torch.tensor([j for _, j in pairs])
        for k in keys:
            rec["max_abs_diff"][k], rec["tolerance"][k] = _diff(got[k][gi], ref[k][ri], k, tol_s, tol_b, atol, rtol, what)
    return rec


def _match(got: dict, ref: dict, tol_s: float, tol_b: float) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Pairs (PyTorch index, export index) of matching detections, and which export ones are used."""
    n_ref, n_got = len(ref["scores"]), len(got["scores"])
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
    return pairs, used


def _check_unmatched(got: dict, ref: dict, pairs, used: torch.Tensor, limits: tuple[float, int], tol_s: float,
                     tol_b: float, what: str) -> int:
    """Raise ExportError for an unmatched detection that is not borderline; returns the borderline count."""
    thresh, max_dets = limits
    n_ref, n_got = len(ref["scores"]), len(got["scores"])

    def borderline(scores: torch.Tensor, idx: int) -> bool:
        s = float(scores[idx])
        return abs(s - thresh) <= tol_s or (len(scores) >= max_dets and abs(s - float(scores.min())) <= tol_s)

    matched_ref, count = {i for i, _ in pairs}, 0
    for side, src, unmatched in (("PyTorch", ref, [i for i in range(n_ref) if i not in matched_ref]),
                                 ("the export", got, (~used).nonzero().flatten().tolist())):
        scores = src["scores"].double()
        for i in unmatched:
            if not borderline(scores, i):
                other = "the export" if side == "PyTorch" else "PyTorch"
                box = [round(float(v), 2) for v in src["boxes"][i]]
                raise ExportError(
                    f"{what}: {n_got} detections, PyTorch {n_ref}; detection {i} of {side} (label {int(src['labels'][i])}, "
                    f"score {float(scores[i]):.4g}, box {box}) has none in {other} with the same label and box and score "
                    f"within {tol_b:.3g} and {tol_s:.3g}")
            count += 1
    return count


def _diff(a: torch.Tensor, b: torch.Tensor, k: str, tol_s, tol_b, atol, rtol, what) -> tuple[float, float]:
    """(max abs difference, tolerance) of output ``k`` of the matched detections (export ``a``, PyTorch ``b``)."""
    if tuple(a.shape) != tuple(b.shape):
        raise ExportError(f"{what}: {k} of shape {tuple(a.shape)}, PyTorch {tuple(b.shape)}")
    if k in ("boxes", "scores"):  # within tolerance by the matching
        return float((a.double() - b.double()).abs().max()), (tol_b if k == "boxes" else tol_s)
    return compare_outputs(a, b, atol, rtol, f"{what}: {k}")


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
