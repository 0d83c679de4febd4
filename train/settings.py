"""What one training run can be told: every setting once, with its default and its help (no torch here).

`TrainConfig` (hep2edge.train.config) checks these fields; `hep2edge train` offers one option per field, named,
defaulted and explained from it (hep2edge.cli.train_options).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ENCODER = "efficientnet-b4"
DEFAULT_TILE = 384


def setting(default: Any, help: str, *, toggle: bool = False) -> Any:
    """A field with its default and help; `toggle`: the CLI offers it as --name/--no-name."""
    return field(default=default, metadata={"help": help, "toggle": toggle})


@dataclass(frozen=True)
class TrainSettings:
    """The fields of a training run; `fold=None` means every fold."""

    data: Path | tuple[Path, ...] = setting(  # one folder, or several trained together (a 1-tuple becomes the Path)
        MISSING, "Dataset folder (images, masks, labels.csv); repeat to train on several.")
    out: Path | None = setting(  # None: the next runs/train/<n>, made once the inputs are checked
        None, "Run folder (default: the next runs/train/<n>).")
    manifest: Path | None = setting(None, "Manifest CSV (default: the dataset's labels.csv).")
    allow_outside: bool = setting(False, "Accept manifest paths that resolve outside the dataset folder.")
    folds_file: Path | None = setting(None, "Reuse patient folds from this JSON.")
    encoder: str = setting(DEFAULT_ENCODER, "Any segmentation_models_pytorch encoder, tu-<timm model> included.")
    encoder_weights: str = setting("none", "none | imagenet | PATH to a state dict.")
    in_channels: int = setting(1, "1 (gray) or 3 (gray replicated).")
    channel_policy: str = setting("luminance", "How colour images become gray.")
    decoder_channels: tuple[int, ...] = setting((256, 128, 64, 32, 16),
                                                "Decoder widths per stage (unet, unetplusplus, manet).")
    arch: str = setting("unet", "Decoder: unet | unetplusplus | manet | linknet | fpn | pspnet | pan | deeplabv3 "
                        "| deeplabv3plus | upernet | segformer.")
    attention: str = setting("none", "Decoder attention: none | scse (unet, unetplusplus).")
    instances: bool = setting(False, "Distance-map head: cells split by watershed; per-cell metrics (AJI, PQ).",
                              toggle=True)
    pattern_map: bool = setting(False, "Per-pixel pattern head (background + 7 patterns; cells.csv classes).",
                                toggle=True)
    # mse: bench_cells (demo-size model, 16 epochs, held-out fields) AJI 0.50 / PQ 0.51 against l1's 0.48 / 0.49
    distance_loss: str = setting("mse", "Distance head loss: mse | l1.")
    pattern_map_dice: bool = setting(True, "Pattern map loss: cross-entropy + soft Dice (or cross-entropy only).",
                                     toggle=True)
    pool_levels: int = setting(1, "Encoder stages pooled into the heads (1-5).")
    dropout: float = setting(0.3, "Dropout before the classification heads.")
    tile: int = setting(DEFAULT_TILE, "Tile size in pixels (multiple of 32).")
    normalization: str = setting("fixed", "fixed (by dtype) | minmax (per tile).")
    augment: bool = setting(False, "Flips, rotations, photometric changes.", toggle=True)
    epochs: int = setting(30, "Epochs per fold.")
    batch_size: int = setting(8, "Tiles per step (per process).")
    lr: float = setting(1e-4, "Adam learning rate.")
    weight_decay: float = setting(0.0, "Adam weight decay.")
    scheduler: str = setting("cosine", "cosine | plateau | none.")
    folds: int = setting(5, "Patient-wise folds.")
    fold: int | None = setting(None, "all, or one fold number to train.")
    seed: int = setting(0, "Seed of folds, initialisation, order and augmentation.")
    seg_loss: str = setting("dice", "dice | bce | dice+bce.")
    class_weights: bool = setting(False, "Inverse-frequency pattern class weights.", toggle=True)
    label_smoothing: float = setting(0.0, "Pattern label smoothing.")
    weighting: str = setting(  # gradnorm starves the pattern task on synth data (see the learning benchmark)
        "fixed", "fixed | gradnorm (the seeds' choice) | uncertainty.")
    task_weights: tuple[float, ...] = setting(  # per task of `tasks`; 3 given: dense heads take 1.0
        (1.0, 1.0, 1.0), "Initial / fixed weights: mask,pattern,intensity[,distance][,pattern_map] "
        "(3 given: the dense heads take 1).")
    alpha: float = setting(0.12, "GradNorm asymmetry alpha.")
    weighting_lr: float = setting(0.025, "GradNorm weight learning rate.")
    monitor: str = setting("score", "Best checkpoint by: score (mean of Dice, pattern and intensity accuracy; + AJI "
                                    "with --instances) | val_loss | dice | pattern_accuracy | ...")
    patience: int = setting(0, "Early stop after this many epochs without gain (0 = off).")
    amp: bool = setting(True, "Mixed precision on CUDA (CPU is always fp32).", toggle=True)
    device: str = setting("auto", "auto | cpu | cuda | cuda:N.")
    resume: bool = setting(False, "Continue the run in --out (or the newest runs/train).")
    progress: bool = setting(True, "Progress bars.", toggle=True)
