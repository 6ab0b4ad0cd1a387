"""Monotonic alignment search (MAS) and the aligner prior, as FastPitch 1.1 trained with them.

MAS finds the monotonic path through a [frames, symbols] log-probability map that starts at (0, 0),
ends at (T-1, N-1), moves from one frame to the next by staying on a symbol or stepping to the next
one, and has the largest total. It computes what the official `binarize_attention` computes:
`torch.log` of the soft attention in float32 (zeros become -inf), then `mas_width1`'s recursion in
float32 and its backtrack, which takes the step whenever the step's score is >= the stay's (so
ties, and -inf against -inf, break towards the earlier symbol). Vectorised over symbols: the
Python loops run over frames only.

The prior is the official `BetaBinomialInterpolator`: beta-binomial priors are computed on a grid
rounded to 100 frames and 20 symbols (one distribution over frames per symbol), then resized to
the real size with linear interpolation (`scipy.ndimage.zoom`, order 1).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from iris_pipeline.errors import InputError

PRIOR_FRAMES_GRID = 100
PRIOR_SYMBOLS_GRID = 20


def monotonic_alignment_search(log_probs: np.ndarray | torch.Tensor) -> np.ndarray:
    """Hard alignment of a [T, N] log-probability map -> durations [N] (int64, sum T).

    `log_probs` is `torch.log(soft_attention)`; it is used in float32, as the official code does.
    """
    x = log_probs.detach().cpu().numpy() if isinstance(log_probs, torch.Tensor) else np.asarray(log_probs)
    if x.ndim != 2:
        raise ValueError(f"log_probs must be [frames, symbols], got shape {x.shape}")
    n_frames, n_symbols = x.shape
    if n_symbols == 0:
        raise InputError("alignment: no symbols to align")
    if n_frames < n_symbols:
        raise InputError(f"alignment: {n_frames} mel frames are fewer than the {n_symbols} symbols; "
                         "cannot give every symbol a frame (speech too short for the text)")
    if np.isnan(x).any():
        raise ValueError("alignment: the log-probability map has NaN values")
    if n_symbols == 1:
        return np.array([n_frames], dtype=np.int64)
    neg_inf = np.float32(-np.inf)
    log_p = x.astype(np.float32, copy=True)
    log_p[0, 1:] = neg_inf
    for i in range(1, n_frames):
        prev = log_p[i - 1]
        log_p[i] += np.maximum(np.concatenate(([neg_inf], prev[:-1])), prev)
    durations = np.zeros(n_symbols, dtype=np.int64)
    j = n_symbols - 1
    for i in range(n_frames - 1, 0, -1):
        durations[j] += 1
        if log_p[i - 1, j - 1] >= log_p[i - 1, j]:
            j -= 1
            if j == 0:  # the first symbol takes every earlier frame
                durations[0] += i - 1
                break
    durations[j] += 1  # frame 0
    return durations


def path_from_durations(durations: np.ndarray) -> np.ndarray:
    """Symbol index of every frame, [sum(durations)]."""
    return np.repeat(np.arange(len(durations)), durations)


def _round_to_grid(value: int, step: int) -> int:
    return max(1, int(np.round((value + 1) / step))) * step


@lru_cache(maxsize=64)
def _grid_prior(n_frames: int, n_symbols: int) -> np.ndarray:
    """[n_frames, n_symbols] float64: symbol k (1-based) gets BetaBinomial(T, k, N + 1 - k) over frames."""
    from scipy.stats import betabinom

    k = np.arange(1, n_symbols + 1, dtype=np.float64)[:, None]
    frames = np.arange(n_frames)[None, :]
    return betabinom.pmf(frames, n_frames, k, n_symbols + 1 - k).T


def beta_binomial_prior(n_symbols: int, n_frames: int) -> torch.Tensor:
    """[n_frames, n_symbols] float32 aligner prior: the official `BetaBinomialInterpolator()(T, N)`."""
    from scipy import ndimage

    grid_frames = _round_to_grid(n_frames, PRIOR_FRAMES_GRID)
    grid_symbols = _round_to_grid(n_symbols, PRIOR_SYMBOLS_GRID)
    prior = ndimage.zoom(_grid_prior(grid_frames, grid_symbols),
                         zoom=(n_frames / grid_frames, n_symbols / grid_symbols), order=1)
    if prior.shape != (n_frames, n_symbols):
        raise RuntimeError(f"prior interpolation gave {prior.shape}, not ({n_frames}, {n_symbols})")
    return torch.from_numpy(prior.astype(np.float32))


def warm_up() -> None:
    """Import scipy.stats / ndimage now (a second or so) rather than during the first alignment."""
    beta_binomial_prior(2, 4)
