"""Monotonic alignment search against a brute force over every monotonic path."""

import itertools

import numpy as np
import pytest
import torch

from speechpeft.models.mas import monotonic_alignment


def brute_force_best(value: np.ndarray) -> float:
    n, m = value.shape
    best = -np.inf
    for steps in itertools.product((0, 1), repeat=m - 1):  # advance or stay between frames
        if sum(steps) != n - 1:
            continue
        tokens = np.concatenate(([0], np.cumsum(steps)))
        best = max(best, value[tokens, np.arange(m)].sum())
    return best


def is_monotonic_path(path: np.ndarray) -> bool:
    n, m = path.shape
    if not (path.sum(axis=0) == 1).all():  # every frame has exactly one token
        return False
    tokens = path.argmax(axis=0)
    return tokens[0] == 0 and tokens[-1] == n - 1 and set(np.diff(tokens)) <= {0, 1}


@pytest.mark.parametrize("seed", range(6))
def test_mas_finds_the_best_path_that_brute_force_finds(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = [(1, 4), (3, 3), (3, 7), (4, 9), (5, 10)]
    scores = torch.randn(len(sizes), 5, 10, generator=g)
    n = torch.tensor([s[0] for s in sizes])
    m = torch.tensor([s[1] for s in sizes])
    path = monotonic_alignment(scores, n, m).numpy()
    for k, (tn, fm) in enumerate(sizes):
        p = path[k, :tn, :fm]
        assert is_monotonic_path(p)
        assert path[k].sum() == fm  # nothing outside the item's lengths
        got = (scores[k, :tn, :fm].numpy() * p).sum()
        assert got == pytest.approx(brute_force_best(scores[k, :tn, :fm].numpy()), abs=1e-5)


def test_more_tokens_than_frames_is_an_error():
    with pytest.raises(ValueError, match="3 tokens cannot align monotonically to 2 frames"):
        monotonic_alignment(torch.zeros(1, 3, 2), torch.tensor([3]), torch.tensor([2]))
