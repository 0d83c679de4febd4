"""Per-cell validation (patch level): instances of each held-out tile against its truth, and the pattern map's IoU.

Predicted cells come from the predicted mask and distance map (the runtime's cell kernels, hep2edge.cell_kernels:
numba where installed), or from the mask's
connected components when the model has no distance head; the pad of a tile that overhangs its image is
background in both. Scores are per tile, averaged over tiles (`mean_instance_scores`). The pattern map's IoU is
over every in-image pixel of the fold (`mean_iou`, background included as a class).
"""

from __future__ import annotations

import numpy as np
import torch

from hep2edge.cell_kernels import cell_kernels
from hep2edge.instances import InstanceParams, connected_instances
from hep2edge.metrics import instance_scores, mean_instance_scores, mean_iou
from hep2edge.train.model import PATTERN_MAP_CLASSES


class CellScorer:
    """Accumulates per-tile instance scores and pattern-map pixels over batches; `metrics()` at the end."""

    def __init__(self, params: InstanceParams | None = None) -> None:
        self.params = params or InstanceParams()
        self.kernels = cell_kernels()
        self.scores: list[dict[str, float]] = []
        self.truth_classes: list[np.ndarray] = []
        self.pred_classes: list[np.ndarray] = []

    def add(self, out: dict[str, torch.Tensor], pred_mask: np.ndarray, valid: np.ndarray, instances: np.ndarray,
            classes: np.ndarray | None) -> None:
        """One batch: model outputs, (N, t, t) bool predicted mask and in-image pixels, truth ids and classes."""
        distance = torch.sigmoid(out["distance"].float())[:, 0].cpu().numpy() if "distance" in out else None
        predicted = None
        if "pattern_map" in out and classes is not None:
            predicted = out["pattern_map"].float().argmax(dim=1).to(torch.uint8).cpu().numpy()
        self.add_maps(pred_mask, valid, instances, classes, distance, predicted)

    def add_maps(self, pred_mask: np.ndarray, valid: np.ndarray, instances: np.ndarray, classes: np.ndarray | None,
                 distance: np.ndarray | None = None, predicted: np.ndarray | None = None) -> None:
        """As `add`, from numpy maps: (N, t, t) distance in 0..1 (sigmoid applied) and predicted pattern-map classes."""
        mask = pred_mask & valid
        if distance is not None:
            distance = distance * valid
        for i in range(len(mask)):
            pred = (self.kernels.instances(mask[i], distance[i], self.params) if distance is not None
                    else connected_instances(mask[i], self.params.min_area))
            self.scores.append(instance_scores(instances[i], pred))
        if predicted is not None and classes is not None:
            self.truth_classes.append(classes[valid])
            self.pred_classes.append(predicted[valid])

    def metrics(self) -> dict[str, float]:
        """aji, pq, dq, sq, precision, recall, f1, centroid_f1, count errors; miou and iou_<class> with a map."""
        result = mean_instance_scores(self.scores) if self.scores else {}
        if self.truth_classes:
            iou = mean_iou(np.concatenate(self.truth_classes), np.concatenate(self.pred_classes),
                           classes=PATTERN_MAP_CLASSES)
            result["miou"] = float(iou["miou"])
            result |= {f"iou_{name}": float("nan") if value is None else float(value)
                       for name, value in iou["per_class"].items()}
        return result
