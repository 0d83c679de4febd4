"""CUDA twins of preprocess.py (pycuda SourceModule): tile cutting + normalisation, and the mask threshold.

One H2D copy of the gray frame; one kernel (a block per tile row, grid (1, t, tiles): threads stride over the
row's pixels, so no integer division; zero outside the image) converts uint8/uint16 to float, applies the
contract's normalisation and writes fp32 or fp16 straight into the backend's input buffer. `minmax`
normalisation first runs a per-tile min/max reduction (pad zeros included, as in the numpy reference). A whole
field (`--inference field`) is padded to its stride multiple and normalised by one kernel (a block per row).
Compiled with --fmad=false so every float operation rounds exactly like numpy's float32 arithmetic. pycuda is
imported on construction.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from hep2edge.contract import ModelContract
from hep2edge.errors import MissingExtraError
from hep2edge.extras import EXTRA_OF
from hep2edge.tiling import TileGrid

THREADS = 256  # minmax (one block per tile, a shared-memory reduction sized for 256) and threshold
ROW_THREADS = 128  # cut: one block per tile row (a 384 px row is 3 passes of 128)

KERNELS = r"""
#include <cuda_fp16.h>

__device__ __forceinline__ void store(float *dst, long i, float v) { dst[i] = v; }
__device__ __forceinline__ void store(__half *dst, long i, float v) { dst[i] = __float2half_rn(v); }

template <typename SRC>
__device__ void tile_minmax(const SRC *src, int height, int width, const int *tops, const int *lefts,
                            int tile, float *lo, float *hi) {
    __shared__ float smin[256];
    __shared__ float smax[256];
    const int n = blockIdx.x;
    float vmin = 3.4e38f, vmax = -3.4e38f;
    for (int ty = 0; ty < tile; ++ty) {
        const int y = tops[n] + ty;
        for (int tx = threadIdx.x; tx < tile; tx += blockDim.x) {
            const int x = lefts[n] + tx;
            const float v = (y < height && x < width) ? (float)src[(long)y * width + x] : 0.0f;
            vmin = fminf(vmin, v);
            vmax = fmaxf(vmax, v);
        }
    }
    smin[threadIdx.x] = vmin;
    smax[threadIdx.x] = vmax;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            smin[threadIdx.x] = fminf(smin[threadIdx.x], smin[threadIdx.x + s]);
            smax[threadIdx.x] = fmaxf(smax[threadIdx.x], smax[threadIdx.x + s]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) { lo[n] = smin[0]; hi[n] = smax[0]; }
}

// grid (1, tile, tiles): blockIdx.z is the tile, blockIdx.y the row inside it; threads stride over the row.
template <typename SRC, typename DST>
__device__ void cut_tiles(const SRC *src, int height, int width, const int *tops, const int *lefts,
                          int tile, float inv_scale, const float *lo, const float *hi,
                          int affine, float mean, float stdev, DST *dst) {
    const int n = blockIdx.z, ty = blockIdx.y;
    const int y = tops[n] + ty;
    const bool row_inside = y < height;
    const long row_start = (long)y * width;
    const long out_start = ((long)n * tile + ty) * tile;
    for (int tx = threadIdx.x; tx < tile; tx += blockDim.x) {
        const int x = lefts[n] + tx;
        float v = (row_inside && x < width) ? (float)src[row_start + x] : 0.0f;
        if (lo == 0) {
            v = v * inv_scale;
        } else {
            const float span = hi[n] - lo[n];
            v = span > 0.0f ? (v - lo[n]) / span : 0.0f;
        }
        if (affine) v = (v - mean) / stdev;
        store(dst, out_start + tx, v);
    }
}

// grid (1, padded_h): blockIdx.y is the row of the padded field; threads stride over its pixels. Zero outside the
// image, then the `fixed` arithmetic of cut_tiles (whole fields are never normalised per tile).
template <typename SRC, typename DST>
__device__ void pad_field(const SRC *src, int height, int width, int padded_w, float inv_scale,
                          int affine, float mean, float stdev, DST *dst) {
    const int y = blockIdx.y;
    const bool row_inside = y < height;
    const long row_start = (long)y * width;
    const long out_start = (long)y * padded_w;
    for (int x = threadIdx.x; x < padded_w; x += blockDim.x) {
        float v = (row_inside && x < width) ? (float)src[row_start + x] : 0.0f;
        v = v * inv_scale;
        if (affine) v = (v - mean) / stdev;
        store(dst, out_start + x, v);
    }
}

template <typename P>
__device__ void threshold(const P *prob, long count, float level, unsigned char *out) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) out[i] = (float)prob[i] > level ? 1 : 0;
}

#define MINMAX(NAME, SRC) extern "C" __global__ void NAME(const SRC *s, int h, int w, const int *t, \
    const int *l, int tile, float *lo, float *hi) { tile_minmax<SRC>(s, h, w, t, l, tile, lo, hi); }
#define CUT(NAME, SRC, DST) extern "C" __global__ void NAME(const SRC *s, int h, int w, const int *t, \
    const int *l, int tile, float inv, const float *lo, const float *hi, int affine, float mean, float stdev, \
    DST *d) { cut_tiles<SRC, DST>(s, h, w, t, l, tile, inv, lo, hi, affine, mean, stdev, d); }
#define FIELD(NAME, SRC, DST) extern "C" __global__ void NAME(const SRC *s, int h, int w, int pw, float inv, \
    int affine, float mean, float stdev, DST *d) { pad_field<SRC, DST>(s, h, w, pw, inv, affine, mean, stdev, d); }
#define THRESH(NAME, P) extern "C" __global__ void NAME(const P *p, long n, float level, unsigned char *o) { \
    threshold<P>(p, n, level, o); }

MINMAX(minmax_u8, unsigned char)
MINMAX(minmax_u16, unsigned short)
CUT(cut_u8_f32, unsigned char, float)
CUT(cut_u8_f16, unsigned char, __half)
CUT(cut_u16_f32, unsigned short, float)
CUT(cut_u16_f16, unsigned short, __half)
FIELD(field_u8_f32, unsigned char, float)
FIELD(field_u8_f16, unsigned char, __half)
FIELD(field_u16_f32, unsigned short, float)
FIELD(field_u16_f16, unsigned short, __half)
THRESH(threshold_f32, float)
THRESH(threshold_f16, __half)
"""

KERNEL_NAMES = ("minmax_u8", "minmax_u16", "cut_u8_f32", "cut_u8_f16", "cut_u16_f32", "cut_u16_f16",
                "field_u8_f32", "field_u8_f16", "field_u16_f32", "field_u16_f16", "threshold_f32", "threshold_f16")
SOURCE_TYPES = {np.dtype(np.uint8): "u8", np.dtype(np.uint16): "u16"}
OUTPUT_TYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}


def import_pycuda() -> tuple[ModuleType, Any]:
    """(pycuda.driver, SourceModule) with the primary context current, or MissingExtraError."""
    try:
        importlib.import_module("pycuda.autoprimaryctx")
        compiler = importlib.import_module("pycuda.compiler")
        return importlib.import_module("pycuda.driver"), compiler.SourceModule
    except ImportError as exc:
        raise MissingExtraError("pycuda", EXTRA_OF["pycuda"]) from exc


class CudaPreprocessor:
    """Cuts and normalises the tiles of gray frames on the GPU, into any device buffer, on one stream."""

    def __init__(self, contract: ModelContract, stream: Any = None) -> None:
        self.cuda, source_module = import_pycuda()
        self.contract = contract
        self.stream = stream if stream is not None else self.cuda.Stream()
        module = source_module(KERNELS, options=["--fmad=false"], no_extern_c=True)
        self._kernels = {name: module.get_function(name) for name in KERNEL_NAMES}
        self._frame: tuple[Any, int] | None = None  # device allocation, capacity in bytes
        self._staging: np.ndarray | None = None
        self._grids: dict[tuple[int, int], tuple[Any, Any, Any, Any]] = {}
        self._mask: tuple[Any, int] | None = None
        self._mask_host: np.ndarray | None = None  # pinned, reused: allocating pinned memory per batch is slow

    def _device_buffer(self, slot: tuple[Any, int] | None, nbytes: int) -> tuple[Any, int]:
        if slot is not None and slot[1] >= nbytes:
            return slot
        if slot is not None:
            slot[0].free()
        return self.cuda.mem_alloc(max(nbytes, 1)), nbytes

    def upload(self, gray: np.ndarray) -> None:
        """One H2D copy of an (H, W) uint8/uint16 frame through a pinned staging buffer."""
        if gray.ndim != 2 or gray.dtype not in SOURCE_TYPES:
            raise ValueError(f"expected an (H, W) uint8/uint16 frame, got {gray.dtype} {gray.shape}")
        # the previous frame's H2D copy and the kernels reading its device copy must be done before either
        # buffer is reused, or freed for a larger one
        self.stream.synchronize()
        if self._staging is None or self._staging.nbytes < gray.nbytes:
            self._staging = self.cuda.pagelocked_empty(gray.nbytes, np.uint8)
        staged = self._staging[: gray.nbytes].view(gray.dtype).reshape(gray.shape)
        np.copyto(staged, gray)
        self._frame = self._device_buffer(self._frame, gray.nbytes)
        self.cuda.memcpy_htod_async(self._frame[0], staged, self.stream)
        self._frame_dtype, self._frame_shape = gray.dtype, gray.shape

    def _grid_arrays(self, grid: TileGrid) -> tuple[Any, Any, Any, Any]:
        key = (grid.height, grid.width)
        if key not in self._grids:
            tops = np.array([p[0] for p in grid.positions], dtype=np.int32)
            lefts = np.array([p[1] for p in grid.positions], dtype=np.int32)
            lo, hi = (self.cuda.mem_alloc(4 * len(grid)) for _ in range(2))
            self._grids[key] = (self.cuda.to_device(tops), self.cuda.to_device(lefts), lo, hi)
        return self._grids[key]

    def cut(self, grid: TileGrid, dst: int, out_dtype: np.dtype, first: int = 0, count: int | None = None) -> None:
        """Write tiles [first, first + count) of the uploaded frame as (count, 1, t, t) at device address `dst`."""
        assert self._frame is not None, "upload() a frame first"
        count = len(grid) - first if count is None else count
        if count <= 0:
            return  # a launch with an empty grid is an error, not a no-op
        spec, t = self.contract.normalization, grid.tile
        tops, lefts, lo, hi = self._grid_arrays(grid)
        src_kind, out_kind = SOURCE_TYPES[self._frame_dtype], OUTPUT_TYPES[np.dtype(out_dtype)]
        offset = 4 * first
        height, width = np.int32(grid.height), np.int32(grid.width)
        args_pos = (int(tops) + offset, int(lefts) + offset)
        if spec.mode == "minmax":
            self._kernels[f"minmax_{src_kind}"](
                self._frame[0], height, width, np.intp(args_pos[0]), np.intp(args_pos[1]), np.int32(t),
                np.intp(int(lo) + offset), np.intp(int(hi) + offset),
                block=(THREADS, 1, 1), grid=(count, 1), stream=self.stream)
            lo_ptr, hi_ptr = np.intp(int(lo) + offset), np.intp(int(hi) + offset)
        else:
            lo_ptr = hi_ptr = np.intp(0)
        scale = float(np.iinfo(self._frame_dtype).max)
        affine = np.int32(spec.mean != 0.0 or spec.std != 1.0)
        self._kernels[f"cut_{src_kind}_{out_kind}"](
            self._frame[0], height, width, np.intp(args_pos[0]), np.intp(args_pos[1]), np.int32(t),
            np.float32(1.0 / scale), lo_ptr, hi_ptr, affine, np.float32(spec.mean), np.float32(spec.std),
            np.intp(dst), block=(ROW_THREADS, 1, 1), grid=(1, t, count), stream=self.stream)

    def field(self, dst: int, out_dtype: np.dtype, padded: tuple[int, int]) -> None:
        """Write the uploaded frame zero-padded to `padded` (Hp, Wp) and normalised, as (1, 1, Hp, Wp) at device
        address `dst`: the twin of runtime.field.field_input (`fixed` normalisation only)."""
        assert self._frame is not None, "upload() a frame first"
        spec = self.contract.normalization
        if spec.mode != "fixed":
            raise ValueError(f"whole-field input needs fixed normalisation, the contract has {spec.mode}")
        height, width = self._frame_shape
        if padded[0] < height or padded[1] < width:
            raise ValueError(f"padded field {padded} is smaller than the {height} x {width} frame")
        src_kind, out_kind = SOURCE_TYPES[self._frame_dtype], OUTPUT_TYPES[np.dtype(out_dtype)]
        scale = float(np.iinfo(self._frame_dtype).max)
        affine = np.int32(spec.mean != 0.0 or spec.std != 1.0)
        self._kernels[f"field_{src_kind}_{out_kind}"](
            self._frame[0], np.int32(height), np.int32(width), np.int32(padded[1]), np.float32(1.0 / scale), affine,
            np.float32(spec.mean), np.float32(spec.std), np.intp(dst),
            block=(ROW_THREADS, 1, 1), grid=(1, padded[0]), stream=self.stream)

    def threshold(self, probabilities: int, shape: tuple[int, ...], dtype: np.dtype, level: float) -> np.ndarray:
        """Device probabilities at address `probabilities` -> host uint8 0/1 of `shape`; only uint8 crosses D2H."""
        count = int(np.prod(shape))
        self._mask = self._device_buffer(self._mask, count)
        kind = OUTPUT_TYPES[np.dtype(dtype)]
        self._kernels[f"threshold_{kind}"](
            np.intp(probabilities), np.int64(count), np.float32(level), self._mask[0],
            block=(THREADS, 1, 1), grid=((count + THREADS - 1) // THREADS, 1), stream=self.stream)
        if self._mask_host is None or self._mask_host.size < count:
            self._mask_host = self.cuda.pagelocked_empty(count, np.uint8)
        host = self._mask_host[:count]
        self.cuda.memcpy_dtoh_async(host, self._mask[0], self.stream)
        self.stream.synchronize()
        return np.array(host).reshape(shape)

    def close(self) -> None:
        for slot in (self._frame, self._mask):
            if slot is not None:
                slot[0].free()
        for arrays in self._grids.values():
            for allocation in arrays:
                allocation.free()
        self._frame = self._mask = None
        self._grids.clear()
