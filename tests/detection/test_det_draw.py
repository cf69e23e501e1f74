"""The drawn predictions and their recall count (botnet.detection.draw, predict, evaluate.found_objects),
on synthetic detections and on a tiny built-in COCO set with an oracle detector: no training."""

import json

import torch
from torch import nn

from botnet.data import builtin_coco_root
from botnet.detection.draw import MIN_SIDE, PALETTE, coco_ground_truth, draw_objects, mask_outlines
from botnet.detection.evaluate import found_objects
from botnet.detection.predict import predict_to_folder, recall_summary
from botnet.engine.optim import WarmupCosine, WarmupMultiStep, build_scheduler, describe_schedule


def test_found_objects_counts_large_objects_matched_one_to_one():
    gt = torch.tensor([[0, 0, 40, 40], [50, 50, 90, 80], [100, 100, 110, 130], [10, 60, 40, 100]], dtype=torch.float32)
    gt_labels = torch.tensor([1, 2, 1, 3])
    boxes = torch.tensor([[1, 1, 41, 41],      # object 0, right class
                          [0, 0, 40, 40],      # object 0 again: a duplicate finds nothing more
                          [50, 50, 90, 80],    # object 1 but the wrong class
                          [100, 100, 110, 130],  # object 2: found, but it is 10 px wide, not counted
                          [10, 60, 40, 100]], dtype=torch.float32)  # object 3, scoring under the threshold
    labels = torch.tensor([1, 1, 3, 1, 3])
    scores = torch.tensor([0.9, 0.8, 0.95, 0.7, 0.4])
    counted, found = found_objects(gt, gt_labels, boxes, labels, scores)
    assert counted.tolist() == [True, True, False, True]
    assert found.tolist() == [True, False, True, False]
    counted, found = found_objects(gt, gt_labels, boxes, labels, scores, score_thresh=0.3)
    assert found.tolist() == [True, False, True, True]
    # IoU just under 0.5 does not count: a box of half the object's width
    counted, found = found_objects(gt[:1], gt_labels[:1], torch.tensor([[0.0, 0.0, 19.0, 40.0]]), torch.tensor([1]),
                                   torch.tensor([0.9]))
    assert found.tolist() == [False]
    counted, found = found_objects(gt, gt_labels, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    assert not found.any() and counted.sum() == 3


def test_mask_outlines_are_the_border_pixels():
    m = torch.zeros(1, 10, 10, dtype=torch.bool)
    m[0, 2:7, 3:9] = True  # 5 x 6
    out = mask_outlines(m)
    assert out.sum() == 5 * 6 - 3 * 4 and not (out & ~m).any()
    assert mask_outlines(m, width=2).sum() == 5 * 6 - 1 * 2
    full = torch.ones(1, 4, 4, dtype=torch.bool)  # the image border counts as outside
    assert mask_outlines(full).sum() == 12


def test_labels_are_drawn_on_filled_backgrounds_in_an_enlarged_image():
    img = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    boxes = torch.tensor([[8.0, 8.0, 56.0, 56.0]])
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 16:48, 16:48] = True
    out = draw_objects(img, boxes, torch.tensor([1]), ["ring"], torch.tensor([0.87]), masks)
    factor = MIN_SIDE // 64
    assert out.shape == (3, 64 * factor, 64 * factor) and out.dtype == torch.uint8
    label_corner = out[:, 8 * factor + 4: 8 * factor + 10, 8 * factor + 4: 8 * factor + 40]
    assert (label_corner.int().sum(0) < 60).any()  # dark text ...
    assert (label_corner == torch.tensor(PALETTE[1])[:, None, None]).all(0).any()  # ... on a box filled with its colour
    assert draw_objects(img, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), []).shape[-1] == 64 * factor


class Oracle(nn.Module):
    """A "detector" that returns the ground truth of each image it is given (in order), scored ``score``."""

    def __init__(self, truths: list[dict], score: float):
        super().__init__()
        self.truths, self.score, self.calls = truths, score, 0

    def forward(self, images):
        gt = self.truths[self.calls]
        self.calls += 1
        n = len(gt["boxes"])
        return [{"boxes": gt["boxes"], "labels": gt["labels"], "scores": torch.full((n,), self.score),
                 "masks": gt["masks"].float()[:, None]}]


def test_predictions_on_a_coco_set_are_drawn_beside_the_ground_truth_with_their_recall(tmp_path):
    root = builtin_coco_root(tmp_path / "cache", num_train=1, num_val=6, img_size=64)
    paths = sorted((root / "val").glob("*.png"))
    truths = [coco_ground_truth(p) for p in paths]
    ann = json.loads((root / "annotations" / "instances_val.json").read_text())
    assert sum(len(t["boxes"]) for t in truths) == len(ann["annotations"]) > 0
    classes = [c["name"] for c in sorted(ann["categories"], key=lambda c: c["id"])]
    counted = sum(int(((t["boxes"][:, 2:] - t["boxes"][:, :2]) > 16).all(1).sum()) for t in truths)
    assert counted > 0

    records = list(predict_to_folder(Oracle(truths, 0.9), paths, classes, tmp_path / "good"))
    assert recall_summary(records) == {"images": 6, "counted": counted, "found": counted, "recall": 1.0}
    from PIL import Image

    drawn = Image.open(records[0]["drawn"])
    factor = -(-MIN_SIDE // 64)
    assert drawn.size[0] > 2 * 64 * factor and drawn.size[1] > 64 * factor  # the two drawings side by side
    assert json.loads((tmp_path / "good" / "detections.json").read_text())[0]["ground_truth"]["counted"] >= 0

    low = list(predict_to_folder(Oracle(truths, 0.3), paths, classes, tmp_path / "low"))  # under the 0.5 threshold
    assert recall_summary(low)["found"] == 0
    assert "ground_truth" not in next(iter(predict_to_folder(Oracle(truths, 0.9), [root.parent / "x.png"], classes,
                                                              tmp_path / "none"))), "no ground truth for an unreadable file"


def test_run_header_states_the_schedule():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.04)
    sched = build_scheduler(opt, WarmupMultiStep([450, 550], 50, 0.1, 0.1))
    assert describe_schedule(sched) == "peak lr 0.04, linear warmup from 0.004 over 50 steps, x0.1 at steps 450, 550"
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.002)
    sched = build_scheduler(opt, WarmupCosine(2790, 93))
    assert describe_schedule(sched) == "peak lr 0.002, linear warmup from 0 over 93 steps, cosine decay to 0 at step 2790"
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert describe_schedule(torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)) == "lr 0.1"
