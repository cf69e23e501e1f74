"""Detection and instance segmentation: BoTNet Mask R-CNN / Faster R-CNN with FPN (torchvision).

``create_detector(name, num_classes, img_size)`` builds ``{maskrcnn,fasterrcnn}_<backbone>_fpn``
for any stride-32 backbone of the registry; ``evaluate_coco`` computes COCO AP with
faster-coco-eval. Training lives in ``botnet.engine.detect``.
"""

from .builders import DETECTOR_KINDS, create_detector, list_detectors, parse_detector_name

__all__ = ["DETECTOR_KINDS", "create_detector", "list_detectors", "parse_detector_name"]
