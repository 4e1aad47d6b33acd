"""Monotonic alignment search (MAS), as VITS and Glow-TTS train their duration models.

Given a score for every (text token, spectrogram frame) pair, find the alignment that assigns
each frame to one token, starts at the first token, ends at the last, and moves forward by at
most one token per frame, with the largest total score. A dynamic program over frames, each
step vectorised over tokens.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def monotonic_alignment(scores: torch.Tensor, text_lengths: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """The best monotonic path for each item: a 0/1 tensor shaped like ``scores`` (B, T_text, T_frames).

    As a loop, for one item with n tokens and m frames (n <= m)::

        Q[i, j] = scores[i, j] + max(Q[i, j-1], Q[i-1, j-1])   (Q[0, 0] = scores[0, 0])
        then walk back from (n-1, m-1), choosing the larger predecessor.

    Entries beyond an item's lengths are 0 in the result.

    Raises:
        ValueError: an item has more tokens than frames (no monotonic path exists), or a length is 0.
    """
    b, t_text, t_frames = scores.shape  # (B, T_text, T_frames)
    values = scores.detach().float().cpu().numpy()
    path = np.zeros_like(values, dtype=np.float32)
    for k in range(b):
        n, m = int(text_lengths[k]), int(frame_lengths[k])
        if n < 1 or m < n:
            raise ValueError(f"item {k}: {n} tokens cannot align monotonically to {m} frames")
        path[k, :n, :m] = _one(values[k, :n, :m])
    return torch.from_numpy(path).to(scores.device, scores.dtype)


def _one(value: np.ndarray) -> np.ndarray:
    n, m = value.shape
    q = np.full((n, m), -np.inf)
    q[0, 0] = value[0, 0]
    for j in range(1, m):
        stay = q[:, j - 1]
        advance = np.concatenate(([-np.inf], q[:-1, j - 1]))  # from token i-1
        q[:, j] = value[:, j] + np.maximum(stay, advance)
    out = np.zeros((n, m), dtype=np.float32)
    i = n - 1
    for j in range(m - 1, -1, -1):
        out[i, j] = 1.0
        if j > 0 and i > 0 and (i == j or q[i - 1, j - 1] > q[i, j - 1]):
            i -= 1
    return out
