"""COCO evaluation: our faster-coco-eval path gives pycocotools' numbers on the same files."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from botnet.detection.evaluate import ALL_METRIC_NAMES, METRIC_NAMES, evaluate_coco, evaluate_results_file, format_coco_table, to_coco_results


def _square_mask(h, w, box):
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 1
    return m


@pytest.fixture
def gt_and_results(tmp_path):
    """A ground truth of 6 images with boxes of all COCO sizes, one crowd region, an image without
    objects, and noisy detections (jittered true positives, duplicates, false positives)."""
    from faster_coco_eval.core import mask as mask_util

    rng = np.random.default_rng(0)
    h, w = 240, 320
    cats = [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]
    images, anns, results = [], [], []
    aid = 1
    for img_id in range(1, 7):
        images.append({"id": img_id, "file_name": f"{img_id}.png", "height": h, "width": w})
        if img_id == 6:
            continue
        for side in (12, 40, 110):  # small, medium, large
            x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            box = (x0, y0, x0 + side, y0 + side)
            cat = int(rng.choice([3, 7]))
            rle = mask_util.encode(np.asfortranarray(_square_mask(h, w, box)))
            rle["counts"] = rle["counts"].decode()
            anns.append({"id": aid, "image_id": img_id, "category_id": cat, "bbox": [x0, y0, side, side],
                         "area": side * side, "iscrowd": 0, "segmentation": rle})
            aid += 1
            for k in range(int(rng.integers(0, 3))):  # 0-2 detections per object, jittered
                j = rng.integers(-side // 4, side // 4 + 1, size=4)
                b = np.clip(np.array(box) + j, 0, [w, h, w, h])
                if b[2] <= b[0] or b[3] <= b[1]:
                    continue
                drle = mask_util.encode(np.asfortranarray(_square_mask(h, w, tuple(int(v) for v in b))))
                drle["counts"] = drle["counts"].decode()
                results.append({"image_id": img_id, "category_id": cat if rng.random() < 0.85 else 10 - cat,
                                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                                "score": float(rng.random()), "segmentation": drle})
        # a crowd region and a false positive inside it
        crowd_box = (5, 5, 60, 60)
        crle = mask_util.encode(np.asfortranarray(_square_mask(h, w, crowd_box)))
        crle["counts"] = crle["counts"].decode()
        anns.append({"id": aid, "image_id": img_id, "category_id": 3, "bbox": [5, 5, 55, 55], "area": 55 * 55,
                     "iscrowd": 1, "segmentation": crle})
        aid += 1
    gt = {"images": images, "annotations": anns, "categories": cats}
    gt_file, res_file = tmp_path / "gt.json", tmp_path / "res.json"
    gt_file.write_text(json.dumps(gt))
    res_file.write_text(json.dumps(results))
    return gt_file, res_file


def _pycocotools(gt_file, res_file, iou_type) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes(str(res_file)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_results_file_matches_pycocotools(gt_and_results, iou_type):
    gt_file, res_file = gt_and_results
    ours = evaluate_results_file(gt_file, res_file, iou_types=(iou_type,))[iou_type]
    stats = _pycocotools(gt_file, res_file, iou_type)
    assert len(stats) == 12 and 5 < stats[0] * 100 < 95  # a non-trivial case
    assert list(ours) == list(ALL_METRIC_NAMES)
    for k, v in zip(ALL_METRIC_NAMES, stats):
        assert v >= 0 and ours[k] == pytest.approx(v * 100, abs=1e-6), k


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_area_range_without_ground_truth_is_minus_one_as_pycocotools(gt_and_results, tmp_path, iou_type):
    """No large objects (and no crowd region) left in the ground truth: pycocotools gives -1 for APl
    and ARl; so do we (not 0), and the table prints "-"."""
    gt_file, res_file = gt_and_results
    gt = json.loads(gt_file.read_text())
    gt["annotations"] = [a for a in gt["annotations"] if a["area"] < 96 ** 2 and not a["iscrowd"]]
    small_gt = tmp_path / "gt_no_large.json"
    small_gt.write_text(json.dumps(gt))
    ours = evaluate_results_file(small_gt, res_file, iou_types=(iou_type,))[iou_type]
    stats = _pycocotools(small_gt, res_file, iou_type)
    assert stats[5] == -1 and stats[11] == -1 and min(stats[:5]) >= 0
    for k, v in zip(ALL_METRIC_NAMES, stats):
        assert ours[k] == pytest.approx(v * 100 if v >= 0 else -1.0, abs=1e-6), k
    row = format_coco_table({iou_type: ours}).splitlines()[1].split()
    assert row[0] == iou_type and row[-1] == "-" and "-" not in row[1:-1]


def test_to_coco_results_maps_categories_and_masks():
    from faster_coco_eval.core import mask as mask_util

    masks = torch.zeros(2, 1, 20, 30)
    masks[0, 0, 2:8, 3:9] = 0.9
    masks[1, 0, 10:12, 5:25] = 0.7
    masks[1, 0, 0, 0] = 0.4  # below the threshold
    out = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 8.0], [5.0, 10.0, 25.0, 12.0]]), "labels": torch.tensor([1, 2]),
           "scores": torch.tensor([0.9, 0.3]), "masks": masks}
    recs = to_coco_results([out, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}],
                           [42, 43], {1: 5, 2: 11})
    assert [r["category_id"] for r in recs] == [5, 11]
    assert recs[0]["bbox"] == [3.0, 2.0, 6.0, 6.0] and recs[0]["image_id"] == 42
    for r, m in zip(recs, masks):
        rle = dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
        assert np.array_equal(mask_util.decode(rle), (m[0] > 0.5).numpy().astype(np.uint8))
    json.dumps(recs)  # serialisable


def test_no_detections_give_zeros_and_table(gt_and_results):
    from faster_coco_eval import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_and_results[0]))
    m = evaluate_coco(gt, [])
    assert m["bbox"]["AP"] == 0 and m["segm"]["AP50"] == 0
    table = format_coco_table(m)
    assert "AP50" in table and "segm" in table


def test_segm_without_masks_is_a_clear_error(gt_and_results):
    from faster_coco_eval import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_and_results[0]))
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_coco(gt, [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.5}], ("segm",))
