"""Comparison points for bench/child_zh.py, trained by speechpeft's own loop as ``Tuning`` strategies
(see speechpeft/train/tuning.py), so they share its batches, schedule, decoding and dev selection:

- PEFT's AdaLoRA (the S2-LoRA paper's main comparison) with its rank allocator stepped after every
  update (``update_and_allocate``) and its orthogonality penalty added to the loss;
- PEFT's VeRA (frozen random A, B shared across layers; trains per-layer scaling vectors only);
- a full fine-tune of every weight.

The PEFT tuners are built in place on the transformers model (``AdaLoraModel(model, config)``),
so the Whisper host decodes through them unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from speechpeft.fs import atomic_write
from speechpeft.train.tuning import WHOLE_WEIGHTS as WEIGHTS
from speechpeft.train.tuning import WholeModelTuning


class _TensorTuning(WholeModelTuning):
    """Shared plumbing (speechpeft.train.tuning.WholeModelTuning): the trained state is every
    parameter that requires grad, by name, stored as trained.safetensors; each subclass's attach
    decides what requires grad."""

    label = ""

    def __init__(self) -> None:
        self.frozen = ()  # attach is the subclass's; the class label stays


class FullFineTune(_TensorTuning):
    """Every weight trains, except Whisper's fixed sinusoidal encoder positions."""

    label = "full fine-tune"

    def attach(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            p.requires_grad_("embed_positions" not in name or "decoder" in name)


class VeRATuning(_TensorTuning):
    """PEFT's VeRA: frozen shared random projections, trained per-layer vectors (b: d_out, d: r)."""

    def __init__(self, targets: str, rank: int = 256, seed: int = 0):
        self.targets, self.rank, self.seed = targets, rank, seed
        self.label = f"VeRA r={rank} (PEFT)"

    def attach(self, model: nn.Module) -> None:
        from peft import VeraConfig
        from peft.tuners.vera import VeraModel

        config = VeraConfig(r=self.rank, target_modules=self.targets, projection_prng_key=self.seed)
        VeraModel(model, config, "default")  # injects in place and freezes the rest


class AdaLoRATuning(_TensorTuning):
    """PEFT's AdaLoRA: SVD-form LoRA whose rank budget falls from init_r to target_r by importance."""

    def __init__(self, targets: str, total_steps: int, init_r: int = 12, target_r: int = 4, alpha: float = 16.0):
        self.label = f"AdaLoRA r {init_r}->{target_r} (PEFT)"
        fractions = {"tinit": 0.1, "tfinal": 0.2}  # warm-up, then allocation, then the final budget
        self.config_values = dict(
            init_r=init_r,
            target_r=target_r,
            lora_alpha=alpha,
            target_modules=targets,
            total_step=total_steps,
            tinit=int(fractions["tinit"] * total_steps),
            tfinal=int(fractions["tfinal"] * total_steps),
            deltaT=max(1, total_steps // 40),
            orth_reg_weight=0.5,
        )
        self.tuner = None

    def attach(self, model: nn.Module) -> None:
        from peft import AdaLoraConfig
        from peft.tuners.adalora import AdaLoraModel

        self.tuner = AdaLoraModel(model, AdaLoraConfig(**self.config_values), "default")

    def _layers(self, model: nn.Module) -> dict[str, nn.Module]:
        from peft.tuners.adalora.layer import AdaLoraLayer

        return {n: m for n, m in model.named_modules() if isinstance(m, AdaLoraLayer)}

    def loss(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        """AdaLoRA's orthogonality penalty: mean over A and B of ||P Pᵀ - I||_F (rows of A, columns of B)."""
        terms = []
        for layer in self._layers(model).values():
            a, b = layer.lora_A["default"], layer.lora_B["default"]  # (r, d_in), (d_out, r)
            for gram in (a @ a.T, b.T @ b):  # (r, r)
                terms.append(torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], device=gram.device)))
        return loss + self.config_values["orth_reg_weight"] * torch.stack(terms).mean()

    def after_step(self, model: nn.Module, lr: float, step: int, total: int) -> None:
        self.tuner.update_and_allocate(step)  # gradients are still in place here

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        out = super().state(model)
        alloc = self.tuner.rankallocator
        for table in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            for name, t in getattr(alloc, table).items():
                out[f"{table}::{name}"] = t.detach().to("cpu").clone()
        pattern = self.tuner.peft_config["default"].rank_pattern or {}
        for name, mask in pattern.items():
            out[f"rank_pattern::{name}"] = torch.as_tensor(mask, dtype=torch.bool)
        return out

    @torch.no_grad()
    def load_state(self, model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
        super().load_state(model, {k: v for k, v in tensors.items() if "::" not in k}, where)
        alloc = self.tuner.rankallocator
        for table in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            getattr(alloc, table).clear()
        pattern = {}
        for key, t in tensors.items():
            table, sep, name = key.partition("::")
            if not sep:
                continue
            if table == "rank_pattern":
                pattern[name] = t.tolist()
            else:
                getattr(alloc, table)[name] = t.clone()
        self.tuner.peft_config["default"].rank_pattern = pattern or None

    def save(self, model: nn.Module, path: Path, extra: dict[str, Any]) -> None:
        tensors = {k: v.contiguous() for k, v in self.state(model).items() if "::" not in k}
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))

    def summary(self, model: nn.Module) -> dict[str, Any]:
        ranks = {n: int((m.lora_E["default"] != 0).sum()) for n, m in self._layers(model).items()}
        kept = sum(
            r * (m.lora_A["default"].shape[1] + m.lora_B["default"].shape[0] + 1)
            for r, m in zip(ranks.values(), self._layers(model).values(), strict=True)
        )
        return {
            **super().summary(model),
            "rank_table": ranks,
            "kept": kept,
            "facts": {
                "AdaLoRA ranks in use": f"{sum(ranks.values())} over {len(ranks)} matrices ({kept:,} parameters)"
            },
        }
