"""Fixed square inputs for BoTNet detectors: the attention maps keep the size of their tables.

The paper trains and evaluates at a fixed ``S x S`` (1024 or 1280): training images come from the
data pipeline already jittered and cropped/padded to ``S x S`` (``botnet.data.build_det_transforms``);
evaluation images of any size are resized so that their longest side is ``S`` and padded to
``S x S``. torchvision's ``GeneralizedRCNNTransform.postprocess`` then maps boxes and masks back
to each image's original size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection.transform import GeneralizedRCNNTransform

__all__ = ["FixedSizeTransform"]


class FixedSizeTransform(GeneralizedRCNNTransform):
    """Normalise, (eval) resize longest side to ``size``, pad every image to ``size x size``.

    Shapes: list of (3, H_i, W_i) float images in [0, 1] -> ImageList of (B, 3, size, size).
    """

    def __init__(self, size: int, image_mean: list[float], image_std: list[float]):
        if size < 32 or size % 32:
            lo = max(32, size // 32 * 32)
            raise ValueError(f"detection input size must be a multiple of 32 (>= 32), got {size}; nearest: {lo} or {lo + 32}")
        # min_size = max_size = size: the longest side becomes ``size``; training images are
        # already size x size (no resize, so the pipeline's scale jitter is kept).
        super().__init__(size, size, image_mean, image_std, size_divisible=32, _skip_resize=True)
        self.size = size

    def batch_images(self, images: list[torch.Tensor], size_divisible: int = 32) -> torch.Tensor:
        for img in images:
            if img.shape[-2] > self.size or img.shape[-1] > self.size:
                raise ValueError(
                    f"image of {img.shape[-2]}x{img.shape[-1]} is larger than the detector's fixed input "
                    f"{self.size}x{self.size}: training images must come cropped to it (botnet.data.build_det_transforms)"
                )
        # Zero padding at the bottom and right by F.pad + stack, not by copying each image into a
        # slice of a zeros batch: the ONNX exporter drops in-place copies into views (the batch
        # stayed all zeros in the exported graph: every image gave the detections of a blank one),
        # which is why torchvision's own batch_images switches to pad + stack when tracing.
        return torch.stack([F.pad(img, [0, self.size - img.shape[-1], 0, self.size - img.shape[-2]]) for img in images])
