"""Monotonic alignment search (MAS) and the beta-binomial alignment prior of FastPitch 1.1.

MAS finds the single monotonic path through a [frames, symbols] log-probability map that starts
at (0, 0), ends at (T-1, N-1), moves from one frame to the next by staying on a symbol or stepping
to the next one, and has the largest total log probability. Every symbol gets >= 1 frame and the
durations sum to T. Same recursion and tie-break (prefer the step) as the official `mas_width1`,
vectorised over symbols: the Python loops run over frames only.
"""

from __future__ import annotations

import numpy as np
import torch

from iris_pipeline.errors import InputError


def monotonic_alignment_search(log_probs: np.ndarray | torch.Tensor) -> np.ndarray:
    """Hard alignment path of a [T, N] log-probability map -> durations [N] (int64, each >= 1, sum T)."""
    x = log_probs.detach().float().cpu().numpy() if isinstance(log_probs, torch.Tensor) else np.asarray(log_probs)
    x = x.astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"log_probs must be [frames, symbols], got shape {x.shape}")
    n_frames, n_symbols = x.shape
    if n_symbols == 0:
        raise InputError("alignment: no symbols to align")
    if n_frames < n_symbols:
        raise InputError(f"alignment: {n_frames} mel frames are fewer than the {n_symbols} symbols; "
                         "cannot give every symbol a frame (speech too short for the text)")
    # -inf scores (log 0) would make unreachable and forbidden states alike; keep them finite but tiny.
    x = np.nan_to_num(x, nan=-1e30, neginf=-1e30)
    neg_inf = -np.inf
    score = np.full(n_symbols, neg_inf)
    score[0] = x[0, 0]
    stepped = np.zeros((n_frames, n_symbols), dtype=bool)  # came from symbol j-1 at frame i
    for i in range(1, n_frames):
        prev_step = np.concatenate(([neg_inf], score[:-1]))
        take_step = prev_step >= score
        stepped[i] = take_step
        score = np.where(take_step, prev_step, score) + x[i]
    # Backtrack: one scalar per frame.
    durations = np.zeros(n_symbols, dtype=np.int64)
    j = n_symbols - 1
    for i in range(n_frames - 1, -1, -1):
        durations[j] += 1
        if i > 0 and j > 0 and stepped[i, j]:
            j -= 1
    return durations


def path_from_durations(durations: np.ndarray) -> np.ndarray:
    """Symbol index of every frame, [sum(durations)]."""
    return np.repeat(np.arange(len(durations)), durations)


def beta_binomial_prior(n_symbols: int, n_frames: int, scaling: float = 1.0) -> torch.Tensor:
    """[n_frames, n_symbols] prior the aligner was trained with (official `beta_binomial_prior_distribution`).

    Frame i (1-based) gets BetaBinomial(n=N, a=s*i, b=s*(T+1-i)) evaluated at symbols 0..N-1.
    """
    from scipy.special import betaln, gammaln  # lighter to import than scipy.stats

    frames = np.arange(1, n_frames + 1, dtype=np.float64)[:, None]
    k = np.arange(n_symbols, dtype=np.float64)[None, :]
    n = float(n_symbols)
    a, b = scaling * frames, scaling * (n_frames + 1 - frames)
    log_choose = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    log_pmf = log_choose + betaln(k + a, n - k + b) - betaln(a, b)
    return torch.from_numpy(np.exp(log_pmf).astype(np.float32))
