"""Raw Atari screens -> the model's 84x84 frames, bit for bit as ale-py's vector env makes them (numpy only).

ale-py 0.12's native vector env (``ale_py.vector_env.AtariVectorEnv``, the training environment)
turns each agent step's screens into one frame in three steps, found by stepping it and a bare
``ale_py.ALEInterface`` through the same games and comparing (``tests/serving/test_serve_screens.py``
holds the evidence; the README, "Game sessions on raw screens", the findings):

1. grayscale first, per screen: ALE's palette luminance ``round(0.2989 R + 0.5870 G + 0.1140 B)``
   (``ALEInterface.getScreenGrayscale``; the formula matches it on all 128 colours of the NTSC
   palette, each at least 0.004 from a rounding boundary, so float32 arithmetic is exact);
2. then the pixel-wise max of the last two screens of the 4-frame action repeat (frames 3 and
   4; at a reset, the one screen after it, max-ed with zeros);
3. then OpenCV's ``cv::resize(..., INTER_AREA)`` from 210x160 to 84x84: area weights per output
   pixel (``area_weights``, OpenCV's ``computeResizeAreaTab``), a float32 horizontal pass summing
   each output column's taps in source order, a float32 vertical pass summing each output row's
   weighted rows in source order, then rounding half to even. Doing the same float32 operations
   in the same order gives the same bits; a matrix product (another summation order, fused
   multiply-adds) would not always.

Costs on this project's 2-core machine (fastest of many runs while training shared the cores):
~70 us grayscale per RGB screen, ~110 us resize per frame. ``resize`` takes a batch (the frames of
every session in a forward pass) and works through it 8 frames at a time: larger numpy passes were
slower per frame (~260 us at 64), their intermediates falling out of cache.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from breakout_dqn import contract

GRAYSCALE_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)  # ALE's ColourPalette luminance


def decode_screens(payload: bytes, rgb: bool) -> np.ndarray:
    """``payload`` as uint8 screens ``[n,210,160,3]`` (``rgb``) or ``[n,210,160]``, 1 <= n <= 4 (a read-only view).

    Raises ContractError naming the sizes expected.
    """
    size = contract.SCREEN_RGB_BYTES if rgb else contract.SCREEN_GRAYSCALE_BYTES
    count, rest = divmod(len(payload), size)
    if rest or not 1 <= count <= contract.MAX_SCREENS_PER_FRAME:
        layout = "[210,160,3] (R, G, B per pixel)" if rgb else "[210,160]"
        raise contract.ContractError(
            f"screens must be 1 to {contract.MAX_SCREENS_PER_FRAME} whole {'RGB' if rgb else 'GRAYSCALE'} screens "
            f"of {size} bytes each (uint8 {layout}, C order); got {len(payload)} bytes"
        )
    shape = (count, contract.SCREEN_HEIGHT, contract.SCREEN_WIDTH, 3)
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape if rgb else shape[:-1])


def grayscale(rgb: np.ndarray) -> np.ndarray:
    """ALE's grayscale of RGB screens ``[..., 3]`` uint8 -> ``[...]`` uint8 (= ``getScreenGrayscale``)."""
    luminance = rgb.reshape(-1, 3) @ GRAYSCALE_WEIGHTS  # float32; uint8 is cast exactly
    luminance += np.float32(0.5)
    return luminance.astype(np.uint8).reshape(rgb.shape[:-1])  # truncation of x + 0.5 = C's round for x >= 0


def area_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA taps for one axis: source indices ``[target, taps]`` and float32 weights.

    Output pixel ``d`` covers source ``[d*scale, (d+1)*scale)``; each source pixel it touches gets
    the covered fraction of its width divided by the cell width (``computeResizeAreaTab``, with
    its 1e-3 tolerance). Unused taps have weight 0 (adding ``0 * x`` leaves a float32 sum as it was).
    """
    scale = source / target
    taps: list[list[tuple[int, float]]] = []
    for d in range(target):
        start, end = d * scale, d * scale + scale
        cell = min(scale, source - start)
        first, last = math.ceil(start), min(math.floor(end), source - 1)
        first = min(first, last)
        row = []
        if first - start > 1e-3:
            row.append((first - 1, (first - start) / cell))
        row += [(s, 1.0 / cell) for s in range(first, last)]
        if end - last > 1e-3:
            row.append((last, min(end - last, 1.0, cell) / cell))
        taps.append(row)
    width = max(len(row) for row in taps)
    indices = np.zeros((target, width), dtype=np.intp)
    weights = np.zeros((target, width), dtype=np.float32)
    for d, row in enumerate(taps):
        for k, (s, w) in enumerate(row):
            indices[d, k], weights[d, k] = s, w  # float64 -> float32 as OpenCV stores it
    return indices, weights


@cache
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    columns, column_weights = area_weights(contract.SCREEN_WIDTH, contract.FRAME_WIDTH)
    rows, row_weights = area_weights(contract.SCREEN_HEIGHT, contract.FRAME_HEIGHT)
    return columns, column_weights, rows, row_weights[:, :, None]


RESIZE_CHUNK = 8  # frames per numpy pass: a chunk's float32 intermediates (~1.7 MB) stay in cache


def resize(screens: np.ndarray) -> np.ndarray:
    """Grayscale screens ``[B,210,160]`` uint8 -> ``[B,84,84]`` uint8, as ``cv::resize(INTER_AREA)`` does it."""
    if len(screens) <= RESIZE_CHUNK:
        return _resize(screens)
    return np.concatenate([_resize(screens[i:i + RESIZE_CHUNK]) for i in range(0, len(screens), RESIZE_CHUNK)])


def _resize(screens: np.ndarray) -> np.ndarray:
    columns, column_weights, rows, row_weights = _tables()
    source = screens.astype(np.float32)
    horizontal = source[:, :, columns[:, 0]] * column_weights[:, 0]
    for k in range(1, columns.shape[1]):
        horizontal += source[:, :, columns[:, k]] * column_weights[:, k]
    vertical = horizontal[:, rows[:, 0], :] * row_weights[:, 0]
    for k in range(1, rows.shape[1]):
        vertical += horizontal[:, rows[:, k], :] * row_weights[:, k]
    np.rint(vertical, out=vertical)  # OpenCV's saturate_cast<uchar>(float): round half to even
    np.clip(vertical, 0, 255, out=vertical)
    return vertical.astype(np.uint8)
