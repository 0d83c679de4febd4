"""Real tiles for calibration and verification, read from an I3A-format dataset.

Calibration tiles come from the checkpoint's training patients (or `--calib-data`), verification
tiles with their masks and labels from its validation patients (or `--val-data`); never random data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hep2edge.contract import ModelContract
from hep2edge.data.combined import patient_key
from hep2edge.errors import ConfigError, DataError
from hep2edge.imageio import read_image, read_mask
from hep2edge.normalization import normalize_tiles
from hep2edge.tiling import TileGrid, extract_tiles, tile_grid
from hep2edge.train.targets import CellClasses, DenseNeeds, cut_dense_targets

ROOT_KEYS = ("root", "dataset_root", "data_root", "dataset", "data_dir")
ROOTS_KEY = "roots"  # several folders trained together (hep2edge train --data A --data B)
TRAIN_KEYS = ("train_patients",)
VAL_KEYS = ("val_patients", "valid_patients", "validation_patients")
Columns = tuple[np.ndarray, ...]  # one image's tile arrays, in TileSet field order


@dataclass
class TileSet:
    """Normalised network inputs with their ground truth, enough to score every precision.

    images (N, C, t, t) float32; masks and valid (N, t, t) bool (valid = inside the image, not pad);
    pattern, intensity (N,) int; image_ids, patient_ids (N,) str; for a model with dense heads, instances
    (N, t, t) uint16 cell ids (0 = background) and, with a pattern map, classes (N, t, t) uint8 (0 = background).
    """

    images: np.ndarray
    masks: np.ndarray
    valid: np.ndarray
    pattern: np.ndarray
    intensity: np.ndarray
    image_ids: np.ndarray
    patient_ids: np.ndarray
    source: str
    instances: np.ndarray | None = None
    classes: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class DataSelection:
    """A dataset folder (and `also` the folders trained together with it) and the patients to use (None = all);
    `allow_outside`: its manifests may name files outside their folder (trained with --allow-outside)."""

    root: Path
    patients: frozenset[str] | None
    origin: str
    allow_outside: bool = False
    also: tuple[Path, ...] = ()

    @property
    def roots(self) -> tuple[Path, ...]:
        return (self.root, *self.also)

    @property
    def shown(self) -> str:
        """The folder, or the folders joined by ' + '."""
        return " + ".join(str(root) for root in self.roots)


def _first(data: dict[str, Any], keys: Sequence[str]) -> Any:
    return next((data[k] for k in keys if data.get(k) not in (None, "", [])), None)


def resolve_selection(
    flag: Path | None, flag_name: str, checkpoint_data: dict[str, Any], patient_keys: Sequence[str], ckpt: Path
) -> DataSelection:
    """The folder given by `flag`, else the checkpoint's dataset restricted to its fold's patients."""
    if flag is not None:
        return DataSelection(Path(flag), None, flag_name)
    data = checkpoint_data if isinstance(checkpoint_data, dict) else {}
    roots, patients = _recorded_roots(data), _first(data, patient_keys)
    gone = next((root for root in roots if not root.is_dir()), None)
    if not roots or patients is None or gone is not None:
        where = f"records dataset {gone} which is not here" if gone is not None else (
            "records no dataset and fold patients"
        )
        raise ConfigError(f"{ckpt}: checkpoint {where}; pass {flag_name} DATA_DIR")
    keys = frozenset(patient_key(p) for p in patients)
    return DataSelection(roots[0], keys, f"{patient_keys[0]} of {ckpt.name}",
                         bool(data.get("allow_outside", False)), roots[1:])


def _recorded_roots(data: dict[str, Any]) -> tuple[Path, ...]:
    """The checkpoint's dataset folders: `roots` (several), else the one of ROOT_KEYS (older checkpoints)."""
    several = data.get(ROOTS_KEY)
    if isinstance(several, list) and several:
        return tuple(Path(str(root)) for root in several)
    root = _first(data, ROOT_KEYS)
    return () if root is None else (Path(str(root)),)


def _load_dataset(selection: DataSelection) -> Any:
    """The selection's folders combined as training did (hep2edge.data.combined.Datasets)."""
    from hep2edge.data.combined import load_datasets

    gone = next((root for root in selection.roots if not root.is_dir()), None)
    if gone is not None:
        raise DataError(f"{gone}: no such dataset folder ({selection.origin})")
    try:
        dataset = load_datasets(selection.roots, allow_outside=selection.allow_outside)
    except DataError as exc:  # its message lists every problem on its own line: keep the first
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise DataError(f"{selection.origin}: " + " ".join(lines[:2])) from exc
    return dataset


def load_records(selection: DataSelection) -> list[Any]:
    """The dataset's image records (the folders combined as training did), restricted to the selected patients."""
    return _selected(_load_dataset(selection), selection)


def _selected(dataset: Any, selection: DataSelection) -> list[Any]:
    """`dataset`'s records of the selected patients; DataError when there are none."""
    records = list(dataset.records)
    if selection.patients is not None:
        records = [r for r in records if patient_key(r.patient) in selection.patients]
    if not records:
        raise DataError(f"{selection.shown}: no images for {selection.origin}")
    return records


def spread_over_patients(records: Sequence[Any], count: int, seed: int) -> list[Any]:
    """Up to `count` records taken round-robin over shuffled patients (seeded), so all patients appear."""
    rng = np.random.default_rng(seed)
    by_patient: dict[str, list[Any]] = {}
    for record in records:
        by_patient.setdefault(patient_key(record.patient), []).append(record)
    queues = [by_patient[k] for k in sorted(by_patient)]
    for queue in queues:
        rng.shuffle(queue)  # type: ignore[arg-type]
    order = rng.permutation(len(queues))
    chosen: list[Any] = []
    while len(chosen) < count and any(queues):
        for index in order:
            if queues[index] and len(chosen) < count:
                chosen.append(queues[index].pop())
    return chosen


def _image_path(root: Path, value: object) -> Path:
    path = Path(str(value))
    return path if path.is_absolute() or path.exists() else root / path


def _read_tiles(root: Path, record: Any, contract: ModelContract) -> tuple[np.ndarray, TileGrid, np.ndarray]:
    """Raw (n, t, t) tiles of one image, its grid, and its (n, C, t, t) normalised network input."""
    image = read_image(_image_path(root, record.image), contract.channel_policy)
    grid = tile_grid(image.shape[0], image.shape[1], contract.tile)
    raw = extract_tiles(image, grid)
    inputs = normalize_tiles(raw, contract.normalization)
    if inputs.shape[1] != contract.channels:
        raise DataError(
            f"{record.image}: gives {inputs.shape[1]} channel(s), the model takes {contract.channels}"
        )
    return raw, grid, inputs


def calibration_tiles(selection: DataSelection, contract: ModelContract, count: int, seed: int) -> np.ndarray:
    """(count, C, t, t) float32 tiles from up to `count` distinct images, spread over patients."""
    records = spread_over_patients(load_records(selection), count, seed)
    rng = np.random.default_rng(seed + 1)
    per_image = math.ceil(count / len(records))
    picked: list[np.ndarray] = []
    for record in records:
        _, _, inputs = _read_tiles(selection.root, record, contract)
        picked.extend(inputs[rng.permutation(len(inputs))[:per_image]])
    order = rng.permutation(len(picked))[:count]
    return np.ascontiguousarray(np.stack([picked[i] for i in sorted(order)]).astype(np.float32))


def _valid_tiles(grid: TileGrid) -> np.ndarray:
    valid = np.zeros((len(grid), grid.tile, grid.tile), dtype=bool)
    for index in range(len(grid)):
        h, w = grid.valid_size(index)
        valid[index, :h, :w] = True
    return valid


def _cell_classes(dataset: Any, selection: DataSelection) -> dict[str, CellClasses]:
    """Image path -> its cells.csv classes (cell id -> pattern), per folder as training reads them."""
    from hep2edge.data.cells import load_cell_classes

    found: dict[str, CellClasses] = {}
    for part in dataset.parts:
        classes = load_cell_classes(part.root, part.records, selection.allow_outside)
        found |= {str(record.image): classes.get(record.image.stem, {}) for record in part.records}
    return found


def _dense_targets(root: Path, record: Any, mask: np.ndarray, grid: TileGrid, needs: DenseNeeds,
                   classes: dict[str, CellClasses]) -> Columns:
    """(instances[, classes]) tiles of one image: its label image, else the mask's connected components."""
    labels = getattr(record, "labels", None)
    labels_path = None if labels is None else _image_path(root, labels)
    targets = cut_dense_targets(labels_path, mask, grid, needs, int(record.pattern),
                                classes.get(str(record.image), {}))
    return (targets["instances"], targets["classes"]) if needs.pattern_map else (targets["instances"],)


def _image_parts(root: Path, record: Any, contract: ModelContract, origin: str) -> tuple[Columns, np.ndarray, TileGrid]:
    """One image's (inputs, masks, valid, pattern, intensity, image_ids, patient_ids) tiles, its mask and grid."""
    _, grid, inputs = _read_tiles(root, record, contract)
    if getattr(record, "mask", None) is None:
        raise DataError(f"{record.image}: has no mask; verification needs masked images ({origin})")
    mask = read_mask(_image_path(root, record.mask))
    if mask.shape != (grid.height, grid.width):
        raise DataError(f"{record.mask}: mask is {mask.shape}, image is {(grid.height, grid.width)}")
    n = len(grid)
    return (
        inputs, extract_tiles(mask, grid), _valid_tiles(grid),
        np.full(n, int(record.pattern)), np.full(n, int(record.intensity)),
        np.full(n, str(record.image)), np.full(n, patient_key(record.patient)),
    ), mask, grid


def verification_tiles(selection: DataSelection, contract: ModelContract, images: int, seed: int) -> TileSet:
    """Every tile of up to `images` held-out images (spread over patients) with masks and labels.

    A model with dense heads (contract.cell_outputs) also gets each tile's true cells (and pattern classes for a
    pattern map), made as training makes them (hep2edge.train.targets).
    """
    dataset = _load_dataset(selection)
    records = spread_over_patients(_selected(dataset, selection), images, seed)
    heads = contract.cell_outputs
    needs = DenseNeeds(pattern_map="pattern_map" in heads)
    classes = _cell_classes(dataset, selection) if needs.pattern_map else {}
    parts: list[Columns] = []
    for record in records:
        part, mask, grid = _image_parts(selection.root, record, contract, selection.origin)
        dense = _dense_targets(selection.root, record, mask, grid, needs, classes) if heads else ()
        parts.append(part + dense)
    inputs, masks, valid, pattern, intensity, image_ids, patient_ids, *dense_columns = (
        np.concatenate(c) for c in zip(*parts))
    dense_fields = dict(zip(("instances", "classes"), dense_columns))
    return TileSet(inputs, masks, valid, pattern, intensity, image_ids, patient_ids,
                   source=f"{len(records)} images of {selection.shown} ({selection.origin})",
                   instances=dense_fields.get("instances"), classes=dense_fields.get("classes"))
