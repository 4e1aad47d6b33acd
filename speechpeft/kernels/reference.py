"""Pure-torch twins of the Triton kernels: same signatures, the semantics as plain tensor code.

They are the oracle in tests and the path on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def batched_lora(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    ids: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scale: torch.Tensor,
) -> torch.Tensor:
    """A linear layer where every utterance may carry its own LoRA adapter.

    x (B, T, d_in); weight (d_out, d_in); bias (d_out,) or None; ids (B,) int64, -1 = no adapter;
    lora_a (N, r, d_in); lora_b (N, d_out, r); scale (N,). Adapters of smaller rank are padded
    with zero rows of A and zero columns of B. As a loop::

        for b in range(B):
            y[b] = x[b] @ weight.T + bias
            if ids[b] >= 0:
                n = ids[b]
                h = (x[b] @ lora_a[n].T).float()          # (T, r), accumulated in fp32
                y[b] += scale[n] * h @ lora_b[n].T.float()
    """
    y = F.linear(x, weight, bias)
    use = ids >= 0
    if not bool(use.any()):
        return y
    n = ids.clamp(min=0)
    h = torch.einsum("btd,brd->btr", x.float(), lora_a[n].float())  # (B, T, r)
    delta = torch.einsum("btr,bor->bto", h, lora_b[n].float()) * scale[n].float()[:, None, None]  # (B, T, d_out)
    return y + (delta * use[:, None, None]).to(y.dtype)


def batched_s2lora(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    ids: torch.Tensor,
    basis_a: torch.Tensor,
    basis_b: torch.Tensor,
    lam: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """A linear layer with S2-LoRA adapters that share one basis and differ only in λ.

    x (B, T, d_in); basis_a (r, d_in); basis_b (d_out, r); lam (N, r); ids (B,), -1 = none.
    The shrink x·Aᵀ runs once for the whole batch. As a loop::

        h = (x @ basis_a.T).float()                      # (B, T, r), once
        for b in range(B):
            y[b] = x[b] @ weight.T + bias
            if ids[b] >= 0:
                y[b] += scale * (h[b] * lam[ids[b]]) @ basis_b.T.float()
    """
    y = F.linear(x, weight, bias)
    use = ids >= 0
    if not bool(use.any()):
        return y
    h = torch.matmul(x.float(), basis_a.float().T)  # (B, T, r)
    h = h * lam[ids.clamp(min=0)].float()[:, None, :] * scale  # (B, T, r)
    delta = torch.matmul(h, basis_b.float().T)  # (B, T, d_out)
    return y + (delta * use[:, None, None]).to(y.dtype)
