"""speechpeft: adapt pretrained speech models with tiny adapters, measure honestly, serve many.

The names below are the public API. ``merge_adapter`` / ``unmerge_adapter`` / ``unload_adapter``
act on every adapter layer of a model; ``merge`` and ``unmerge`` are short aliases.
"""

from .adapters import (
    LoRAConfig,
    MasterConfig,
    S2LoRAConfig,
    adapter_condition,
    adapter_layers,
    after_optimizer_step,
    assert_adapter_mode,
    count_parameters,
    inject,
    load_adapter,
    merge_adapter,
    read_adapter,
    register_adapter,
    s2lora_sparsity,
    save_adapter,
    unload_adapter,
    unmerge_adapter,
)
from .errors import SpeechPeftError
from .models import Wav2Vec2Host, WhisperHost, load_host, load_wav2vec2, load_whisper

merge = merge_adapter
unmerge = unmerge_adapter

__version__ = "0.1.0"

__all__ = [
    "LoRAConfig",
    "MasterConfig",
    "S2LoRAConfig",
    "SpeechPeftError",
    "Wav2Vec2Host",
    "WhisperHost",
    "adapter_condition",
    "adapter_layers",
    "after_optimizer_step",
    "assert_adapter_mode",
    "count_parameters",
    "inject",
    "load_adapter",
    "load_host",
    "load_wav2vec2",
    "load_whisper",
    "merge",
    "merge_adapter",
    "read_adapter",
    "register_adapter",
    "s2lora_sparsity",
    "save_adapter",
    "unload_adapter",
    "unmerge",
    "unmerge_adapter",
]
