"""Shared fixtures: tiny random Whisper models built from a config, and the real whisper-base.

The Hugging Face cache beside the project (../shared/hf-cache) is used when present, offline,
so `pytest` behaves as in CI without setting variables by hand. This must run before
huggingface_hub is imported, which reads the variables once.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_SHARED_CACHE = (ROOT.parent / "shared" / "hf-cache").resolve()
if "HF_HUB_CACHE" not in os.environ and _SHARED_CACHE.is_dir():
    os.environ["HF_HUB_CACHE"] = str(_SHARED_CACHE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

DATA = ROOT / "tests" / "data"
REAL_MODEL = "openai/whisper-base"


def tiny_whisper_config(**overrides):
    from transformers import WhisperConfig

    values = dict(
        vocab_size=96,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_mel_bins=80,
        max_source_positions=50,
        max_target_positions=32,  # 100 mel frames = 1 s
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=3,
    )
    values.update(overrides)
    return WhisperConfig(**values)


def build_tiny_whisper(seed: int = 0, **overrides):
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(seed)
    return WhisperForConditionalGeneration(tiny_whisper_config(**overrides)).eval()


@pytest.fixture
def tiny_whisper():
    """A factory: tiny_whisper(seed=0, **config_overrides) -> WhisperForConditionalGeneration."""
    return build_tiny_whisper


@pytest.fixture
def tiny_batch():
    """Random features and labels for the tiny model: 3 utterances, 7 target tokens."""
    g = torch.Generator().manual_seed(123)
    return {
        "input_features": torch.randn(3, 80, 100, generator=g),
        "labels": torch.randint(4, 96, (3, 7), generator=g),
    }


def real_model_available() -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(REAL_MODEL, "config.json"), str)


requires_real_model = pytest.mark.skipif(
    not real_model_available(),
    reason=f"{REAL_MODEL} is not in the Hugging Face cache (set HF_HUB_CACHE; CI points it at ../shared/hf-cache)",
)


@pytest.fixture
def whisper_base():
    """A fresh real openai/whisper-base host (fp32, CPU); loading takes about a second."""
    from speechpeft import load_whisper

    return load_whisper(REAL_MODEL, device="cpu")


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory):
    """A saved tiny Whisper with tokenizer and generation config: loadable by path like a real one."""
    from tiny import make_tiny_whisper_dir

    return make_tiny_whisper_dir(tmp_path_factory.mktemp("tiny-whisper"))
