"""Speaker conditioning for a single-speaker VITS voice, for USAT's instant adaptation.

A single-speaker voice (Piper's joe) has no global-conditioning layers. ``add_conditioning``
rebuilds it with them, as transformers lays them out for a multi-speaker VITS (a 1x1 conv per
flow WaveNet, one in the decoder's input and one in the duration predictor), every one
zero-initialised, so that the voice speaks exactly as before until they are trained. The
speaker's conditioning vector comes from a verifier embedding through a linear projection, kept
beside the weights in ``speaker_projection.safetensors`` with the verifier's name: a new voice
costs one embedding of its references and one matrix-vector product (``speechpeft clone
--variant instant``). The posterior encoder's conditioning layer is built (transformers builds
it) but stays zero: the posterior was fitted without a speaker input.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import SpeechPeftError

PROJECTION_FILE = "speaker_projection.safetensors"
INSTANT_REPORT = "instant.json"  # what tts train-instant trained on (voices, steps, verifier)
# conditioning layers that instant training moves (the posterior's stays zero)
TRAINED_CONDITIONING = ("flow.", "duration_predictor.", "decoder.")


class SpeakerProjection(nn.Module):
    """Verifier embedding (D,) or (N, D) -> conditioning vector(s) of the voice's width."""

    def __init__(self, verifier: str, verifier_dim: int, width: int):
        super().__init__()
        self.verifier = verifier
        self.linear = nn.Linear(verifier_dim, width)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear(embedding.to(self.linear.weight))

    def save(self, folder: Path) -> None:
        meta = {"verifier": self.verifier, "verifier_dim": str(self.linear.in_features)}
        state = {k: v.detach().cpu().contiguous() for k, v in self.linear.state_dict().items()}
        save_file(state, str(folder / PROJECTION_FILE), metadata=meta)

    @classmethod
    def load(cls, folder: Path) -> SpeakerProjection | None:
        path = folder / PROJECTION_FILE
        if not path.is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
        if "verifier" not in meta or set(state) != {"weight", "bias"}:
            raise SpeechPeftError(f"{path}: not a speaker projection (needs weight, bias and a verifier name)")
        width, dim = state["weight"].shape
        out = cls(meta["verifier"], dim, width)
        out.linear.load_state_dict(state)
        return out


def conditioning_layers(model: nn.Module) -> dict[str, nn.Conv1d]:
    """Every global-conditioning conv of a VITS model, by name."""
    return {n: m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in ("cond", "cond_layer")}


@torch.no_grad()
def zero_conditioning(model: nn.Module) -> None:
    """Make every conditioning conv output zero (under weight norm: its magnitude, so v keeps a direction)."""
    for conv in conditioning_layers(model).values():
        if hasattr(conv, "parametrizations") and "weight" in conv.parametrizations:
            conv.parametrizations.weight.original0.zero_()
        elif hasattr(conv, "weight_g"):
            conv.weight_g.zero_()
        else:
            conv.weight.zero_()
        conv.bias.zero_()


def add_conditioning(model: nn.Module, width: int) -> nn.Module:
    """A copy of the single-speaker ``model`` with zero-initialised conditioning layers of ``width``.

    Raises:
        SpeechPeftError: the model already takes a speaker input.
    """
    from transformers import VitsModel

    from .vits_build import use_resblocks_type2

    if model.config.speaker_embedding_size:
        raise SpeechPeftError(
            "this VITS voice already takes a speaker input; instant training needs a single-speaker base"
        )
    config = copy.deepcopy(model.config)
    config.speaker_embedding_size = width
    config.num_speakers = 1  # no table: the speaker is a free vector
    out = VitsModel(config)
    if str(getattr(config, "resblock_type", "1")) == "2":
        use_resblocks_type2(out)
    result = out.load_state_dict(model.state_dict(), strict=False)
    if result.unexpected_keys or not all(re.search(r"\.(cond|cond_layer)\.", k) for k in result.missing_keys):
        raise SpeechPeftError(f"internal: conditioning rebuild left {result.missing_keys[:2]} unloaded")
    zero_conditioning(out)
    out.to(next(model.parameters()).device).eval()
    return out


def describe(folder: Path) -> dict:
    """instant.json of an instant base, or {}."""
    path = folder / INSTANT_REPORT
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
