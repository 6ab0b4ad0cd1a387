"""Monotonic alignment search against brute force, its invariants, and the aligner prior.

Exact equality with the official code (ties, underflow, the interpolated prior) is in tests/unit/parity/."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from iris_pipeline.alignment import beta_binomial_prior, monotonic_alignment_search, path_from_durations
from iris_pipeline.errors import InputError


def brute_force_best_score(log_probs: np.ndarray) -> float:
    """Best total over every split of T frames into N runs of >= 1 frame, in symbol order."""
    n_frames, n_symbols = log_probs.shape
    best = -np.inf
    for cuts in itertools.combinations(range(1, n_frames), n_symbols - 1):
        bounds = (0, *cuts, n_frames)
        total = sum(log_probs[bounds[j]:bounds[j + 1], j].sum() for j in range(n_symbols))
        best = max(best, total)
    return best


@st.composite
def log_prob_maps(draw, max_frames=9):
    n_frames = draw(st.integers(1, max_frames))
    n_symbols = draw(st.integers(1, n_frames))
    return draw(arrays(np.float64, (n_frames, n_symbols),
                       elements=st.floats(-20.0, 0.0, allow_nan=False, allow_infinity=False)))


def path_score(log_probs: np.ndarray, durations: np.ndarray) -> float:
    return float(log_probs[np.arange(log_probs.shape[0]), path_from_durations(durations)].sum())


@settings(max_examples=150, deadline=None)
@given(log_probs=log_prob_maps())
def test_mas_equals_brute_force_and_keeps_its_invariants(log_probs):
    durations = monotonic_alignment_search(log_probs)
    n_frames, n_symbols = log_probs.shape
    assert durations.shape == (n_symbols,)
    assert durations.sum() == n_frames
    assert (durations >= 1).all()
    path = path_from_durations(durations)
    assert path[0] == 0 and path[-1] == n_symbols - 1
    assert set(np.diff(path)) <= {0, 1}  # monotonic, one symbol at a time
    # the recursion runs in float32, as the official: optimal up to float32 rounding
    assert path_score(log_probs, durations) == pytest.approx(brute_force_best_score(log_probs), abs=1e-3)


def test_mas_prefers_the_step_on_ties_like_the_official_code():
    # all paths tie: official mas_width1 backtracks with `>=`, i.e. moves to the earlier symbol
    # as late as possible in time -> the last symbols get one frame, the first gets the rest
    durations = monotonic_alignment_search(np.zeros((6, 3)))
    assert durations.tolist() == [4, 1, 1]


def test_mas_follows_a_clear_diagonal():
    durations = np.array([3, 1, 5, 2])
    log_probs = np.full((11, 4), -10.0)
    log_probs[np.arange(11), path_from_durations(durations)] = 0.0
    assert monotonic_alignment_search(log_probs).tolist() == durations.tolist()


def test_mas_survives_minus_infinity():
    with np.errstate(divide="ignore"):
        log_probs = np.log(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
    assert monotonic_alignment_search(log_probs).tolist() == [1, 2]


def test_mas_breaks_minus_infinity_ties_towards_the_step():
    # every path through symbol 1 is -inf: official `>=` compares -inf with -inf and steps back early
    with np.errstate(divide="ignore"):
        log_probs = np.log(np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    assert monotonic_alignment_search(log_probs).tolist() == [2, 1, 1]


def test_mas_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        monotonic_alignment_search(np.full((4, 2), np.nan))


def test_fewer_frames_than_symbols_cannot_align():
    with pytest.raises(InputError, match="3 mel frames are fewer than the 5 symbols"):
        monotonic_alignment_search(np.zeros((3, 5)))


@pytest.mark.parametrize(("n_symbols", "n_frames"), [(10, 50), (37, 123), (3, 7), (64, 400)])
def test_beta_binomial_prior_shape_and_diagonal(n_symbols, n_frames):
    prior = beta_binomial_prior(n_symbols, n_frames).numpy()
    assert prior.shape == (n_frames, n_symbols) and prior.dtype == np.float32
    assert (prior >= 0).all()
    peaks = prior.argmax(0)  # each symbol's most likely frame moves forward with the symbol
    assert (np.diff(peaks) >= 0).all() and peaks[0] < n_frames // 4 and peaks[-1] > 3 * n_frames // 4
