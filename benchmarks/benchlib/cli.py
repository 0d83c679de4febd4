"""Options every benchmark script shares, the real-size defaults and the `--quick` preset, the work folder."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .models import ModelSet, ModelSpec, prepare_random_set
from .results import RESULTS

FULL = {"encoder": "efficientnet-b4", "decoder_channels": "256,128,64,32,16", "tile": 384, "size": "1040x1388"}
QUICK = {"encoder": "mobilenet_v2", "decoder_channels": "64,32,16,16,8", "tile": 128, "size": "256x384"}
STARTED = time.monotonic()


def say(message: str) -> None:
    """One progress line with the seconds since the script started."""
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


def add_common(parser: argparse.ArgumentParser) -> None:
    """--out, --quick, --models, --work and the model/image options (defaults: the real sizes)."""
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default {RESULTS})")
    parser.add_argument("--quick", action="store_true",
                        help="tiny model, small images, short timings: minutes on a 2-core CPU")
    parser.add_argument("--models", type=Path, default=None,
                        help="a prepared model folder (models.json) or a `hep2edge export` folder; default: "
                             "export a random-weight model of --encoder/--tile into the work folder")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for data and models, kept for reuse (default: a temporary folder)")
    parser.add_argument("--encoder", default=FULL["encoder"])
    parser.add_argument("--decoder-channels", default=FULL["decoder_channels"])
    parser.add_argument("--tile", type=int, default=FULL["tile"])
    parser.add_argument("--heads", action="store_true",
                        help="the random-weight model also has the distance and pattern-map heads (per-cell analysis)")
    parser.add_argument("--size", default=FULL["size"], help="image size HEIGHTxWIDTH")
    parser.add_argument("--seed", type=int, default=0)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
          quick: Mapping[str, object]) -> argparse.Namespace:
    """Parse `argv`; with --quick, the QUICK preset and the script's own `quick` values become the defaults."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--quick" in argv:
        parser.set_defaults(**{k: v for k, v in {**QUICK, **quick}.items()})
    return parser.parse_args(argv)


def spec_of(args: argparse.Namespace) -> ModelSpec:
    return ModelSpec(args.encoder, tuple(int(c) for c in str(args.decoder_channels).split(",")), args.tile,
                     heads=bool(getattr(args, "heads", False)))


def size_of(args: argparse.Namespace) -> tuple[int, int]:
    from hep2edge.synth.writer import parse_size

    return parse_size(args.size)


@contextlib.contextmanager
def work_folder(args: argparse.Namespace) -> Iterator[Path]:
    """--work if given (kept), else a temporary folder removed afterwards."""
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        yield args.work
        return
    folder = Path(tempfile.mkdtemp(prefix="hep2edge-bench-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def pool_folder(work: Path, args: argparse.Namespace) -> Path:
    return work / f"pool-{args.size}-seed{args.seed}"


def engine_profile(args: argparse.Namespace, largest_batch: int) -> tuple[int, int, int]:
    """TensorRT profile (min, opt, max): optimised for one image's tiles, up to the largest batch timed."""
    from .data import tiles_per_image

    return 1, min(tiles_per_image(size_of(args), args.tile), largest_batch), largest_batch


def resolve_models(args: argparse.Namespace, work: Path, precisions: tuple[str, ...] = ("fp32", "fp16", "int8"),
                   engine_batch: tuple[int, int, int] = (1, 15, 32)) -> ModelSet:
    """--models, or a random-weight export of the chosen architecture cached in the work folder."""
    if args.models is not None:
        models = ModelSet.load(args.models)
        say(f"models: {models.description or args.models}")
        return models
    from .data import synth_pool

    spec = spec_of(args)
    data = pool_folder(work, args)
    synth_pool(data, 7, size_of(args), args.seed)
    key = f"models-{spec.encoder}-{spec.tile}-{'-'.join(map(str, spec.decoder_channels))}{'-heads' * spec.heads}"
    return prepare_random_set(spec, work / key, data, precisions, say, engine_batch)
