"""Compiled (numba) twins of the per-cell post-processing's slow steps: the `numba` cell kernels.

hep2edge.instances holds the numpy/OpenCV reference; hep2edge.cell_kernels runs these and is tested against it.
Each kernel is a few passes in machine code, compiled on first use and cached on disk (numba's `cache=True`:
next to this file, or in the user's cache folder where that is read-only). No function here takes the GIL.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

_LEVELS = 256

Band = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # measure_band's table, gray sums, votes, segments


@numba.njit(cache=True, nogil=True)
def framed_seeds(seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(h + 2, w + 2) int32 labels for flood_part, framed by one pixel so that a neighbour needs no bounds test:
    the (h, w) int32 seeds (0 = none) on the 0/1 uint8 mask, -1 off it and on the frame (branch-free rows)."""
    height, width = seeds.shape
    out = np.full((height + 2, width + 2), -1, np.int32)
    off = np.int32(-1)
    for y in range(height):
        source, inside, row = seeds[y], mask[y], out[y + 1, 1:-1]
        for x in range(width):
            row[x] = source[x] if inside[x] else off
    return out


@numba.njit(cache=True, nogil=True)
def flood_part(framed: np.ndarray, wait: np.ndarray, groups: np.ndarray, part: int, parts: int,
               seeds: int) -> np.ndarray:
    """Grow the seeds 1..seeds of framed_seeds' labels, in place, over the 0 pixels, by level: a priority flood
    (Meyer's watershed without lines) on a 256-bucket queue. A pixel takes the label of the neighbour
    (4-connected) that reaches it first and waits at max(current level, its own). Only seeds whose `groups`
    (framed int32 8-connected component ids of the mask) % parts == part flood, so parts of the field flood in
    parallel threads. Returns the pixels per label (seeds + 1,) this part holds at the end."""
    labels, levels, group = framed.reshape(-1), wait.reshape(-1), groups.reshape(-1)
    stride = framed.shape[1]
    after = np.empty(labels.shape[0], np.int32)  # each level's FIFO is a linked list through the pixels
    head = np.full(_LEVELS, -1, np.int32)
    tail = np.full(_LEVELS, -1, np.int32)
    area = np.zeros(seeds + 1, np.int64)
    for p in range(labels.shape[0]):
        if labels[p] > 0 and (parts == 1 or group[p] % parts == part):
            area[labels[p]] += 1
            at = levels[p]
            if tail[at] < 0:
                head[at] = p
            else:
                after[tail[at]] = p
            tail[at] = p
    level = 0
    while level < _LEVELS:
        p = head[level]
        if p < 0:
            level += 1
            continue
        head[level] = after[p] if p != tail[level] else -1
        if head[level] < 0:
            tail[level] = -1
        cell = labels[p]
        for i in range(4):
            q = p + (-stride if i == 0 else -1 if i == 1 else 1 if i == 2 else stride)
            if labels[q] == 0:
                labels[q] = cell
                area[cell] += 1
                at = max(level, levels[q])
                if tail[at] < 0:
                    head[at] = q
                else:
                    after[tail[at]] = q
                tail[at] = q
    return area


@numba.njit(cache=True, nogil=True)
def peak_tops(markers: np.ndarray, count: int, dist: np.ndarray, h8: int) -> np.ndarray:
    """(h, w) uint8 0/1: each marker (int32 1..count-1) cut to its pixels within h8 of its own peak of `dist`
    (hep2edge.instances.peak_tops, in two passes)."""
    height, width = markers.shape
    peak = np.zeros(count, np.int64)
    for y in range(height):
        for x in range(width):
            if markers[y, x] > 0:
                peak[markers[y, x]] = max(peak[markers[y, x]], dist[y, x])
    tops = np.zeros((height, width), np.uint8)
    for y in range(height):
        for x in range(width):
            if markers[y, x] > 0 and dist[y, x] >= peak[markers[y, x]] - h8:
                tops[y, x] = 1
    return tops


@numba.njit(cache=True, nogil=True)
def renumber(framed: np.ndarray, lookup: np.ndarray, out: np.ndarray, top: int, bottom: int) -> None:
    """Rows top..bottom of `out` = lookup[framed + 1]: the framed flood labels as cells 0..n."""
    for y in range(top, bottom):
        source, row = framed[y], out[y]
        for x in range(source.shape[0]):
            row[x] = lookup[source[x] + 1]


@numba.njit(cache=True, nogil=True)
def _grown_row(own: np.ndarray, grow: bool, row: int, out: np.ndarray, across: np.ndarray) -> None:
    """out (w,): row `row` of the framed (h + 2, w + 2) cells `own`; with `grow`, an unlabelled pixel takes the
    largest cell of its 3x3 neighbourhood (shrunk cells then reach the full mask's edge at full size)."""
    above, middle, below = own[row], own[row + 1], own[row + 2]
    if not grow:
        out[:] = middle[1:-1]
        return
    for x in range(across.shape[0]):
        across[x] = max(above[x], middle[x], below[x])
    for x in range(out.shape[0]):
        centre = middle[x + 1]
        out[x] = centre if centre else max(across[x], across[x + 1], across[x + 2])


@numba.njit(cache=True, nogil=True)
def measure_band(own: np.ndarray, grow: bool, rows: np.ndarray, starts: np.ndarray,
                 mask: np.ndarray, gray: np.ndarray, planes: np.ndarray, cells: int, labels: np.ndarray, top: int,
                 bottom: int) -> Band:
    """Per-cell sums over rows top..bottom of the full-size cells, which it also writes to those rows of `labels`
    (a (0, 0) array: not written). Full pixel (y, x) is cell `grown[rows[y], column of x]` where the mask is 1.

    own: (h + 2, w + 2) int32 cells 0..cells framed by a pixel of 0, grown as `grow` says (_grown_row);
    rows: (H,) the shrunk row of each full row; starts: (w + 1,) the first full column of each shrunk column
    (starts[w] = W); mask, gray: (H, W) uint8 0/1 and integer or float; planes: (K, H, W) uint8, K 7 or 0.
    Each run of a cell along a shrunk row is one segment of a full row, whose masked pixels are counted and
    summed at once (0-based slices: vector code). Returns int64 [area, row sum, column sum, top, left, bottom,
    right] (cells + 1, 7), float64 gray sums (cells + 1,), int64 votes (cells + 1, K + 1) of the per-pixel first
    argmax of the planes (K: none), and the int32 segments [row, start, stop, cell, whole] (S, 5).
    """
    height, width = mask.shape
    k = planes.shape[0]
    table = np.zeros((cells + 1, 7), np.int64)
    table[:, 3] = height
    table[:, 4] = width
    gray_sum = np.zeros(cells + 1, np.float64)  # exact for integer gray below 2**53
    votes = np.zeros((cells + 1, k + 1), np.int64)
    source, across, shrunk_row = np.empty(own.shape[1] - 2, np.int32), np.empty(own.shape[1], np.int32), -1
    segments = np.empty(((bottom - top) * source.shape[0] if k else 0, 5), np.int32)
    count = 0
    for y in range(top, bottom):
        if rows[y] != shrunk_row:
            shrunk_row = rows[y]
            _grown_row(own, grow, shrunk_row, source, across)
        keep = mask[y]
        a = 0
        while a < source.shape[0]:
            cell = source[a]
            b = a + 1
            while b < source.shape[0] and source[b] == cell:
                b += 1
            lo, hi = starts[a], starts[b]
            a = b
            if labels.shape[0]:
                labels[y, lo:hi] = 0
            if cell <= 0:
                continue
            while lo < hi and not keep[lo]:  # grown cells overhang the mask by a pixel or two
                lo += 1
            while hi > lo and not keep[hi - 1]:
                hi -= 1
            if lo == hi:
                continue
            inside = keep[lo:hi]
            area = 0
            for i in range(inside.shape[0]):
                area += inside[i]
            whole = area == hi - lo  # the usual case: no hole, plain sums (AVX2 has no int64 multiply)
            if labels.shape[0]:
                out = labels[y, lo:hi]
                if whole:
                    out[:] = cell
                else:
                    for i in range(out.shape[0]):
                        out[i] = cell if inside[i] else 0
            if whole:
                column_sum = (lo + hi - 1) * area // 2
                values = gray[y, lo:hi]
                brightness = values[0] * 0  # integer or float sums
                for i in range(values.shape[0]):
                    brightness += values[i]
            else:
                column_sum, brightness = _masked_sums(inside, gray[y, lo:hi], lo)
            row = table[cell]
            row[0] += area
            row[1] += y * area
            row[2] += column_sum
            row[3] = min(row[3], y)
            row[4] = min(row[4], lo)
            row[5] = max(row[5], y + 1)
            row[6] = max(row[6], hi)
            gray_sum[cell] += brightness
            if k:
                _vote(planes, y, lo, hi, inside, votes[cell])
                segment = segments[count]
                segment[0], segment[1], segment[2], segment[3], segment[4] = y, lo, hi, cell, whole
                count += 1
    return table, gray_sum, votes, segments[:count]


@numba.njit(cache=True, nogil=True)
def chosen_sums(planes: np.ndarray, mask: np.ndarray, chosen: np.ndarray,
                segments: np.ndarray) -> np.ndarray:
    """(cells + 1,) int64: per cell, the sum of its chosen plane (`chosen` (cells + 1,)) over its masked pixels in
    the measure_band segments."""
    total = np.zeros(chosen.shape[0], np.int64)
    for s in range(segments.shape[0]):
        y, lo, hi, cell, whole = segments[s]
        plane = planes[chosen[cell], y, lo:hi]
        if whole:
            run = 0
            for i in range(plane.shape[0]):
                run += plane[i]
            total[cell] += run
        else:
            total[cell] += _masked_sums(mask[y, lo:hi], plane, 0)[1]
    return total


@numba.njit(cache=True, nogil=True)
def _masked_sums(inside: np.ndarray, values: np.ndarray, offset: int) -> tuple[int, Any]:
    """(sum of offset + i, sum of values[i]) over the pixels i inside."""
    columns, total = 0, values[0] * 0
    for i in range(inside.shape[0]):
        if inside[i]:
            columns += offset + i
            total += values[i]
    return columns, total


@numba.njit(cache=True, nogil=True)
def _vote(planes: np.ndarray, y: int, lo: int, hi: int, inside: np.ndarray, tally: np.ndarray) -> None:
    """tally[j] += pixels of row y, lo..hi (those inside) whose first largest of the 7 planes is plane j.

    One pass of branch-free uint8 steps the compiler turns into vector code: the maximum of the 7 values, then the
    largest 7 - j where plane j equals it (the first such plane), counted per code."""
    p0, p1, p2, p3 = planes[0, y, lo:hi], planes[1, y, lo:hi], planes[2, y, lo:hi], planes[3, y, lo:hi]
    p4, p5, p6 = planes[4, y, lo:hi], planes[5, y, lo:hi], planes[6, y, lo:hi]
    no, t1, t2, t3 = np.uint8(0), np.uint8(1), np.uint8(2), np.uint8(3)
    t4, t5, t6, t7 = np.uint8(4), np.uint8(5), np.uint8(6), np.uint8(7)
    n0 = n1 = n2 = n3 = n4 = n5 = n6 = 0
    for i in range(p0.shape[0]):
        a0, a1, a2, a3, a4, a5, a6 = p0[i], p1[i], p2[i], p3[i], p4[i], p5[i], p6[i]
        top = max(max(max(a0, a1), max(a2, a3)), max(max(a4, a5), a6))
        code = max(max(max(t7 if a0 == top else no, t6 if a1 == top else no),
                       max(t5 if a2 == top else no, t4 if a3 == top else no)),
                   max(max(t3 if a4 == top else no, t2 if a5 == top else no), t1 if a6 == top else no))
        counted = inside[i] != 0
        n0 += (code == t7) & counted
        n1 += (code == t6) & counted
        n2 += (code == t5) & counted
        n3 += (code == t4) & counted
        n4 += (code == t3) & counted
        n5 += (code == t2) & counted
        n6 += (code == t1) & counted
    tally[0] += n0
    tally[1] += n1
    tally[2] += n2
    tally[3] += n3
    tally[4] += n4
    tally[5] += n5
    tally[6] += n6
