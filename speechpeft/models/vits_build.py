"""Building a VITS voice from its folder: what ``VitsModel.from_pretrained`` alone gets wrong.

- HiFi-GAN residual blocks of type 2 (Piper's medium voices): one dilated conv per dilation,
  ``x = x + conv_d(leaky_relu(x))``. transformers builds only type 1 (two convs per dilation), so
  ``from_pretrained`` would leave half the decoder random. ``config.resblock_type == "2"`` selects
  them here.
- Training-side modules an inference export lacks (the posterior encoder, the stochastic duration
  predictor's posterior flows and its unused flow): they are built, freshly initialised, and named
  in ``VitsHost.missing``; ``speechpeft tts complete-base`` trains them.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..errors import SpeechPeftError
from .vits import VitsHost
from .vits_speaker import PROJECTION_FILE, SpeakerProjection
from .vits_text import PHONEMES_FILE, load_front_end

WEIGHTS = "model.safetensors"
# what an inference-only export may lack, and what loss needs it
TRAINING_SIDE = re.compile(r"posterior_encoder\..*|duration_predictor\.(post_.*|flows\.1\..*)")


class ResBlock2(nn.Module):
    """HiFi-GAN residual block, type 2: for each dilation d, ``x + conv_d(leaky_relu(x, slope))``."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...], slope: float):
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=(kernel_size * d - d) // 2) for d in dilation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs1:
            x = x + conv(nn.functional.leaky_relu(x, self.slope))
        return x


def use_resblocks_type2(model: nn.Module) -> None:
    """Replace the decoder's type-1 blocks with type-2 ones of the same channels, kernels and dilations."""
    c = model.config
    blocks = []
    for i in range(len(c.upsample_rates)):
        channels = c.upsample_initial_channel // (2 ** (i + 1))
        for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes, strict=True):
            blocks.append(ResBlock2(channels, k, tuple(d), c.leaky_relu_slope))
    model.decoder.resblocks = nn.ModuleList(blocks)


def _resolve(name_or_path: str, filename: str) -> Path | None:
    local = Path(name_or_path)
    if local.is_dir():
        return local / filename if (local / filename).is_file() else None
    from transformers.utils import cached_file

    try:
        found = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SpeechPeftError(f"cannot load VITS model {name_or_path!r}: {first}") from None
    return Path(found) if found else None


def load_vits(name_or_path: str, device: str | torch.device | None = None) -> VitsHost:
    """Load a VITS voice (hub id or local folder) with its text front end, in fp32.

    Raises:
        SpeechPeftError: the model cannot be found or loaded, or its weights do not fit its config.
    """
    from safetensors.torch import load_file
    from transformers import VitsConfig, VitsModel

    try:
        config = VitsConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SpeechPeftError(f"cannot load VITS model {name_or_path!r}: {first}") from None
    weights = _resolve(name_or_path, WEIGHTS)
    if weights is None:
        raise SpeechPeftError(f"cannot load VITS model {name_or_path!r}: no {WEIGHTS}")
    config._name_or_path = name_or_path
    model = VitsModel(config)
    if str(getattr(config, "resblock_type", "1")) == "2":
        use_resblocks_type2(model)
    state = load_file(str(weights))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape mismatch
        raise SpeechPeftError(f"{weights}: does not fit its config: {str(e).splitlines()[-1].strip()}") from None
    missing = sorted(result.missing_keys)
    bad = [k for k in missing if not TRAINING_SIDE.fullmatch(k)] + list(result.unexpected_keys)
    if bad:
        raise SpeechPeftError(f"{weights}: {bad[0]!r} does not fit this VITS config ({len(bad)} such tensors)")
    model.to(torch.device(device) if device else torch.device("cpu")).eval()
    phonemes = _resolve(name_or_path, PHONEMES_FILE)
    front = load_front_end(phonemes.parent if phonemes else None, name_or_path)
    projection = SpeakerProjection.load(weights.parent)
    if projection is not None and projection.linear.out_features != config.speaker_embedding_size:
        raise SpeechPeftError(f"{weights.parent / PROJECTION_FILE}: its width does not fit the voice's speaker input")
    return VitsHost(model, front, missing=missing, projection=projection.to(model.device) if projection else None)
