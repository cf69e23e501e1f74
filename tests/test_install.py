"""The installed torch/torchvision pair works: torchvision's compiled ops run (the install trap:
a CPU-only torch wheel beside a registry torchvision breaks them)."""

import torch
import torchvision
from torchvision.ops import nms, roi_align


def test_torchvision_ops_run():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    out = roi_align(torch.arange(16.0).reshape(1, 1, 4, 4), [torch.tensor([[0.0, 0.0, 3.0, 3.0]])], output_size=2)
    assert out.shape == (1, 1, 2, 2)


def test_versions_are_a_pair():
    tv = tuple(int(x) for x in torchvision.__version__.split("+")[0].split(".")[:2])
    t = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    # torchvision 0.(N+15) is built for torch 2.N
    assert tv[0] == 0 and t[0] == 2 and tv[1] == t[1] + 15, (torch.__version__, torchvision.__version__)
