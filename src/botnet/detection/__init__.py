"""Detection and instance segmentation: BoTNet Mask R-CNN / Faster R-CNN with FPN (torchvision).

``create_detector(name, num_classes, img_size)`` builds ``{maskrcnn,fasterrcnn}_<backbone>_fpn``
for any stride-32 backbone of the registry; ``evaluate_coco`` computes COCO AP with
faster-coco-eval; ``load_detector`` rebuilds a trained one from its checkpoint. Training is the
``DetectionTask`` of the engine (``botnet.engine.detect``).
"""

from .builders import DETECTOR_KINDS, create_detector, list_detectors, parse_detector_name
from .loading import build_detector_from_config, load_detector

__all__ = ["DETECTOR_KINDS", "build_detector_from_config", "create_detector", "list_detectors", "load_detector",
           "parse_detector_name"]
