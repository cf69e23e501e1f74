"""Fixed square inputs for BoTNet detectors: the attention maps keep the size of their tables.

The paper trains and evaluates at a fixed ``S x S`` (1024 or 1280) with the Cloud TPU detection
code's input pipeline (tensorflow/tpu ``dataloader/maskrcnn_parser.py`` 203-226 and 330-340,
``utils/input_utils.py`` ``resize_and_crop_image``): normalise, resize (training: jittered and
cropped; evaluation: the longest side to ``S``), then pad with zeros to ``S x S``, image at the
top-left. Here the data pipeline (``botnet.data.build_det_transforms``) does the resize and crop
of training images; this transform normalises, resizes evaluation images (``fit_size``: the same
size rule as training at scale 1), and pads with zeros after normalising, in both modes.
torchvision's ``GeneralizedRCNNTransform.postprocess`` then maps boxes and masks back to each
image's original size.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from ..data.det_transforms import fit_size

__all__ = ["FixedSizeTransform"]


class FixedSizeTransform(GeneralizedRCNNTransform):
    """Normalise, (eval) resize longest side to ``size``, pad every image with zeros to ``size x size``.

    Shapes: list of (3, H_i, W_i) float images in [0, 1] -> ImageList of (B, 3, size, size).
    """

    def __init__(self, size: int, image_mean: list[float], image_std: list[float]):
        if size < 32 or size % 32:
            lo = max(32, size // 32 * 32)
            raise ValueError(f"detection input size must be a multiple of 32 (>= 32), got {size}; nearest: {lo} or {lo + 32}")
        super().__init__(size, size, image_mean, image_std, size_divisible=32, _skip_resize=True)
        self.size = size

    def resize(self, image: torch.Tensor,
               target: Optional[dict[str, torch.Tensor]] = None) -> tuple[torch.Tensor, Optional[dict[str, torch.Tensor]]]:
        """Training: unchanged (the pipeline's scale jitter and crop are kept). Eval: bilinear
        (no antialiasing, as TF's ``resize_images``) to ``fit_size(H, W, size)``; target boxes follow."""
        if self.training:
            return image, target
        h, w = image.shape[-2], image.shape[-1]
        size = fit_size(h, w, float(self.size))
        if size[0] != h or size[1] != w:
            image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        if target is not None and "boxes" in target:
            target["boxes"] = resize_boxes(target["boxes"], [h, w], size)
        return image, target

    def batch_images(self, images: list[torch.Tensor], size_divisible: int = 32) -> torch.Tensor:
        for img in images:
            if img.shape[-2] > self.size or img.shape[-1] > self.size:
                raise ValueError(
                    f"image of {img.shape[-2]}x{img.shape[-1]} is larger than the detector's fixed input "
                    f"{self.size}x{self.size}: training images must come cropped to it (botnet.data.build_det_transforms)"
                )
        # Zero padding (after normalisation) at the bottom and right by F.pad + stack, not by copying
        # each image into a slice of a zeros batch: the ONNX exporter drops in-place copies into views
        # (the batch stayed all zeros in the exported graph: every image gave the detections of a blank
        # one), which is why torchvision's own batch_images switches to pad + stack when tracing.
        return torch.stack([F.pad(img, [0, self.size - img.shape[-1], 0, self.size - img.shape[-2]]) for img in images])
