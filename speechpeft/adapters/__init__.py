"""Adapter core: the registry, injection, the adapter kinds and their files.

Importing this package registers every built-in kind (one module per kind).
"""

from .base import AdapterLayer, adapter_kind, register_adapter, registered_kinds
from .inject import (
    adapter_condition,
    adapter_layers,
    adapter_parameters,
    after_optimizer_step,
    assert_adapter_mode,
    before_optimizer_step,
    count_parameters,
    freeze_base,
    inject,
    match_targets,
    merge_adapter,
    presets_for,
    register_presets,
    unload_adapter,
    unmerge_adapter,
)
from .io import AdapterFile, load_adapter, read_adapter, save_adapter, summarize_adapter
from .lora import LoRAConfig, LoRALinear
from .master import MasterConfig, MasterLinear
from .s2lora import S2LoRAConfig, S2LoRALinear, s2lora_sparsity
from .usat import USATAdapter, USATConfig

__all__ = [
    "AdapterFile",
    "AdapterLayer",
    "LoRAConfig",
    "LoRALinear",
    "MasterConfig",
    "MasterLinear",
    "S2LoRAConfig",
    "S2LoRALinear",
    "USATAdapter",
    "USATConfig",
    "adapter_condition",
    "adapter_kind",
    "adapter_layers",
    "adapter_parameters",
    "after_optimizer_step",
    "assert_adapter_mode",
    "before_optimizer_step",
    "count_parameters",
    "freeze_base",
    "inject",
    "load_adapter",
    "match_targets",
    "merge_adapter",
    "presets_for",
    "read_adapter",
    "register_adapter",
    "register_presets",
    "registered_kinds",
    "s2lora_sparsity",
    "save_adapter",
    "summarize_adapter",
    "unload_adapter",
    "unmerge_adapter",
]
