"""Master-ASR (Yu et al., ICML 2023): a shared pool of specialist scores, assembled per language.

Every targeted weight W gets K specialist scores M_k (each the shape of W). Every transformer
layer (all targeted matrices whose names share the path up to the layer index) gets a
language-to-specialist table T (languages x K). For language l, a matrix computes with

    S_l = sum_k M_k * 1[sigmoid(T[l, k]) > 0.5]
    B_l = 1 where S_l is among the top (1 - t) of its entries, else 0
    y   = x (W * B_l)^T + bias

Both indicator functions are trained through with straight-through estimators (the forward
value is the hard 0/1, the gradient is that of the soft value). The scores start from |W|
(PARP's magnitude init), so the first mask drops the t smallest-magnitude weights whatever T
says; T starts from a seeded normal, so languages choose different specialists from the start
and the scores can specialise.

Two stages:
- stage 1 (``languages: [..]``): scores and T train; T at ``t_lr`` x the learning rate and only
  every ``t_every`` updates.
- stage 2 (``new_language: xx``, ``stage1: <adapter dir>``): the stage-1 pool is loaded and
  frozen, one new row per table trains (and a new CTC head, for CTC hosts). Its file holds only
  those rows, and names the stage-1 folder and checksum it extends; loading checks both.

The language is chosen per call (``with adapter_condition(model, language="de"):``; hosts do it
from their ``language`` argument). Outside training, each matrix's masked weight for the current
language is computed once and reused until the language or a tensor changes.

Not implemented: training W itself (the paper's alternating "Iter" schedule); W stays frozen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AdapterFileError, SpeechPeftError
from .base import AdapterLayer, Targets, adapter_dtype, expect_tensor, normalise_targets, register_adapter

TABLE_PREFIX = "master.T."
NEW_PREFIX = "master.T_new."


@dataclass(frozen=True)
class MasterConfig:
    languages: tuple[str, ...] = ()  # stage 1: the languages of T's rows, in order
    specialists: int = 4  # K
    sparsity: float = 0.3  # t: the fraction of each weight masked out
    targets: Targets = "attn"  # the paper: self-attention q, k, v, out
    t_lr: float = 10.0  # T's learning rate as a multiple of the run's
    t_every: int = 5  # stage 1: T is updated on every t_every-th update only
    seed: int = 0  # T's random start
    new_language: str = ""  # stage 2: the language whose row is added and trained
    stage1: str = ""  # stage 2: the stage-1 adapter folder this one extends
    stage1_sha256: str = ""  # stage 2: that folder's tensor checksum, recorded at injection

    def __post_init__(self):
        langs = self.languages
        if isinstance(langs, str):
            langs = (langs,)
        object.__setattr__(self, "languages", tuple(c.lower() if isinstance(c, str) else c for c in langs))
        if isinstance(self.new_language, str):
            object.__setattr__(self, "new_language", self.new_language.lower())
        if not isinstance(self.specialists, int) or self.specialists < 1:
            raise ValueError(f"MasterConfig.specialists must be a positive integer, got {self.specialists!r}")
        if not isinstance(self.sparsity, (int, float)) or not 0 <= self.sparsity < 1:
            raise ValueError(f"MasterConfig.sparsity must be in [0, 1) (the masked fraction t), got {self.sparsity!r}")
        if not isinstance(self.t_lr, (int, float)) or self.t_lr <= 0:
            raise ValueError(f"MasterConfig.t_lr must be a positive multiplier, got {self.t_lr!r}")
        if not isinstance(self.t_every, int) or self.t_every < 1:
            raise ValueError(f"MasterConfig.t_every must be a positive integer, got {self.t_every!r}")
        for code in (*self.languages, *((self.new_language,) if self.new_language else ())):
            if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,15}", code):
                raise ValueError(f"MasterConfig: {code!r} is not a language code (e.g. 'de', 'sw')")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"MasterConfig.languages lists a language twice: {list(self.languages)}")
        if self.new_language:
            if not self.stage1:
                raise ValueError("MasterConfig.new_language needs stage1: the stage-1 adapter folder it extends")
            if self.new_language in self.languages:
                raise ValueError(f"MasterConfig.new_language {self.new_language!r} is already a stage-1 language")
        elif self.stage1:
            raise ValueError("MasterConfig.stage1 is for stage 2: set new_language too")
        elif not self.languages:
            raise ValueError("MasterConfig.languages must list the stage-1 languages (or set new_language for stage 2)")
        object.__setattr__(self, "targets", normalise_targets(self.targets, "MasterConfig"))

    @property
    def stage(self) -> int:
        return 2 if self.new_language else 1

    @property
    def all_languages(self) -> tuple[str, ...]:
        return self.languages + ((self.new_language,) if self.new_language else ())


def table_key(name: str) -> str:
    """The layer a module belongs to: its name up to the last numeric part
    (``model.encoder.layers.3.self_attn.q_proj`` -> ``model.encoder.layers.3``)."""
    match = re.match(r"(.*\.\d+)(?:\.|$)", name)
    return match.group(1) if match else name.rpartition(".")[0]


class MasterPool:
    """What every layer of one model shares: the tables by layer, and the language of the call."""

    def __init__(self, config: MasterConfig):
        self.config = config
        self.tables: dict[str, MasterTable] = {}
        self.current: int | None = None

    def index(self) -> int:
        if self.current is None:
            raise SpeechPeftError(
                "a Master-ASR adapter assembles the model per language; pass a language "
                f"(--language; it knows {', '.join(self.config.all_languages)})"
            )
        return self.current


class MasterTable(nn.Module):
    """One layer's language-to-specialist table: stage-1 rows T and stage-2 rows T_new."""

    def __init__(self, config: MasterConfig, like: torch.Tensor, key: str):
        super().__init__()
        where = dict(device=like.device, dtype=adapter_dtype(like))
        k = config.specialists
        if config.stage == 1:
            gen = torch.Generator().manual_seed(config.seed * 7919 + _stable_hash(key))
            self.T = nn.Parameter(torch.randn(len(config.languages), k, generator=gen).to(**where))
            self.register_buffer("T_new", torch.zeros(0, k, **where))
        else:  # the stage-1 rows arrive from the stage-1 file (after_inject)
            self.register_buffer("T", torch.zeros(0, k, **where))
            gen = torch.Generator().manual_seed(config.seed * 7919 + _stable_hash(key + "/new"))
            self.T_new = nn.Parameter(torch.randn(1, k, generator=gen).to(**where))

    def row(self, index: int) -> torch.Tensor:
        n = self.T.shape[0]
        return self.T[index] if index < n else self.T_new[index - n]


def _stable_hash(text: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(text)) % 1_000_003


class MasterLinear(AdapterLayer):
    """``y = x (W ⊙ B_l)ᵀ + b`` with B_l assembled from the shared pool for the call's language."""

    max_trainable_fraction = 1.0  # the K scores per weight outnumber the weights they mask

    def __init__(self, base_layer: nn.Linear, config: MasterConfig, shared: dict, name: str = ""):
        super().__init__(base_layer, config)
        pool = shared.setdefault("master", MasterPool(config))
        key = table_key(name)
        w = base_layer.weight
        if key not in pool.tables:
            pool.tables[key] = MasterTable(config, w, key)
        self.table = pool.tables[key]  # the same module in every matrix of this layer
        self.table_key = key
        self.__dict__["pool"] = pool  # a plain attribute: not a module, not state
        scores = w.detach().abs().to(adapter_dtype(w)).unsqueeze(0).repeat(config.specialists, 1, 1)
        if config.stage == 1:
            self.scores = nn.Parameter(scores)  # (K, d_out, d_in), PARP-style magnitude start
        else:
            self.register_buffer("scores", scores)  # replaced by the stage-1 scores, frozen
        self._cache: tuple[tuple, torch.Tensor] | None = None

    # --- the assembled weight -----------------------------------------------------------------

    def mask(self, index: int) -> torch.Tensor:
        """B for language ``index``: hard 0/1 values, straight-through gradients to T and M."""
        prob = torch.sigmoid(self.table.row(index))  # (K,)
        gate = (prob > 0.5).to(prob.dtype) + (prob - prob.detach())  # exactly 0/1 forward
        s = torch.einsum("k,koi->oi", gate, self.scores)  # (d_out, d_in)
        drop = round(self.config.sparsity * s.numel())
        if drop == 0:
            hard = torch.ones_like(s)
        else:  # keep entries >= the (drop+1)-th smallest; all-equal scores keep everything
            threshold = s.detach().flatten().kthvalue(drop + 1).values
            hard = (s.detach() >= threshold).to(s.dtype)
        return hard + (s - s.detach())  # bracketed: hard + s - s would round away from 0/1

    def _versions(self, index: int) -> tuple:
        t = self.table
        return (index, self.scores._version, t.T._version, t.T_new._version, self.base_layer.weight._version,
                self.scores.data_ptr(), t.T.data_ptr(), t.T_new.data_ptr())  # fmt: skip

    def masked_weight(self) -> torch.Tensor:
        index = self.pool.index()
        w = self.base_layer.weight
        if self.training or torch.is_grad_enabled():
            return w * self.mask(index).to(w.dtype)
        key = self._versions(index)
        if self._cache is None or self._cache[0] != key:  # once per language and state
            self._cache = (key, (w * self.mask(index).to(w.dtype)).detach())
        return self._cache[1]

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        w = self.masked_weight()
        return F.linear(x, w.to(x.dtype), None if self.base_layer.bias is None else self.base_layer.bias.to(x.dtype))

    def delta_weight(self) -> torch.Tensor:
        w = self.base_layer.weight
        with torch.no_grad():
            return w * self.mask(self.pool.index()).to(w.dtype) - w

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self._original = self.base_layer.weight.detach().clone()
            self.base_layer.weight.copy_(self.masked_weight().detach())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base_layer.weight.copy_(self._original)
            del self._original
            self.merged = False

    def unmerged_weight(self) -> torch.Tensor:
        return self._original if self.merged else self.base_layer.weight.detach()

    def lr_scales(self) -> dict[str, float]:
        return {"table.T": self.config.t_lr, "table.T_new": self.config.t_lr}

    # --- the pool: language per call, update period, files -------------------------------------

    @classmethod
    def condition(cls, layers, language: str | None = None):
        pool = next(iter(layers.values())).pool
        return _language(pool, language)

    @classmethod
    def before_step(cls, layers, step: int) -> None:
        pool = next(iter(layers.values())).pool
        if pool.config.stage == 1 and step % pool.config.t_every:
            for table in pool.tables.values():
                table.T.grad = None  # AdamW leaves a parameter without a gradient untouched

    @classmethod
    @torch.no_grad()
    def after_inject(cls, layers, config: MasterConfig) -> None:
        if config.stage == 1:
            return
        from .io import read_adapter  # io imports the kinds; a top-level import would be circular

        where = f"adapter.stage1 '{config.stage1}'"
        try:
            af = read_adapter(config.stage1)
        except AdapterFileError as e:
            raise AdapterFileError(f"the stage-1 Master-ASR adapter of this stage-2 one: {e}") from None
        if af.kind != "master" or af.config.stage != 1:
            raise AdapterFileError(f"{where} is not a stage-1 Master-ASR adapter (kind {af.kind})")
        sha = af.record["tensors_sha256"]
        if config.stage1_sha256 and config.stage1_sha256 != sha:
            raise AdapterFileError(
                f"{where} is not the stage-1 adapter this one was trained on (its tensors' checksum "
                f"{sha[:12]} differs from the recorded {config.stage1_sha256[:12]})"
            )
        if sorted(af.targets) != sorted(layers):
            raise AdapterFileError(f"{where} adapts other modules than this stage-2 adapter")
        if config.new_language in af.config.languages:
            raise AdapterFileError(f"{where} already has a row for {config.new_language!r}")
        if (af.config.specialists, af.config.sparsity) != (config.specialists, config.sparsity):
            raise AdapterFileError(
                f"{where} has specialists={af.config.specialists}, sparsity={af.config.sparsity:g}; "
                f"this stage-2 config says {config.specialists}, {config.sparsity:g}"
            )
        full = dataclasses.replace(
            config, languages=af.config.languages, stage1=str(Path(config.stage1).resolve()), stage1_sha256=sha
        )
        pool = next(iter(layers.values())).pool
        pool.config = full
        for name, layer in layers.items():
            layer.config = full
            scores = expect_tensor(af.tensors, f"{name}.scores", tuple(layer.scores.shape), where)
            layer.scores.copy_(scores)
        for key, table in pool.tables.items():
            rows = expect_tensor(af.tensors, f"{TABLE_PREFIX}{key}", None, where)
            table.T = rows.to(device=table.T_new.device, dtype=table.T_new.dtype).clone()

    @classmethod
    def state_for_save(cls, layers, prune: bool) -> dict[str, torch.Tensor]:
        first = next(iter(layers.values()))
        tables = first.pool.tables
        if first.config.stage == 2:
            return {f"{NEW_PREFIX}{key}": t.T_new.detach() for key, t in sorted(tables.items())}
        out = {f"{name}.scores": layer.scores.detach() for name, layer in sorted(layers.items())}
        out.update({f"{TABLE_PREFIX}{key}": t.T.detach() for key, t in sorted(tables.items())})
        return out

    @classmethod
    @torch.no_grad()
    def load_saved(cls, layers, tensors: Mapping[str, torch.Tensor], where: str) -> None:
        first = next(iter(layers.values()))
        tables = first.pool.tables
        if first.config.stage == 2:
            for key, t in tables.items():
                t.T_new.copy_(expect_tensor(tensors, f"{NEW_PREFIX}{key}", tuple(t.T_new.shape), where))
            return
        for name, layer in layers.items():
            layer.scores.copy_(expect_tensor(tensors, f"{name}.scores", tuple(layer.scores.shape), where))
        for key, t in tables.items():
            t.T.copy_(expect_tensor(tensors, f"{TABLE_PREFIX}{key}", tuple(t.T.shape), where))

    @classmethod
    def summarize(cls, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        new = {k: t for k, t in tensors.items() if k.startswith(NEW_PREFIX)}
        if new:
            floats = sum(t.numel() for t in new.values())
            k = next(iter(new.values())).shape[-1]
            text = f"stage 2    one new language row per layer: {len(new)} layers x K={k} = {floats} floats"
            return {"stage": 2, "layers": len(new), "new_row_floats": floats, "lines": [text]}
        tables = {k: t for k, t in tensors.items() if k.startswith(TABLE_PREFIX)}
        scores = sum(t.numel() for k, t in tensors.items() if k.endswith(".scores"))
        rows = sum(t.numel() for t in tables.values())
        text = f"stage 1    a pool of {scores:,} specialist scores and {len(tables)} language tables ({rows} floats)"
        return {"stage": 1, "layers": len(tables), "table_floats": rows, "score_floats": scores, "lines": [text]}

    @classmethod
    def live_summary(cls, layers) -> dict[str, Any]:
        cfg = next(iter(layers.values())).config
        langs = ", ".join(cfg.all_languages)
        facts = {"Master-ASR": f"stage {cfg.stage}, {len(layers)} matrices, K={cfg.specialists}, t={cfg.sparsity:g}, "
                               f"languages {langs}"}  # fmt: skip
        return {"facts": facts}


@contextlib.contextmanager
def _language(pool: MasterPool, language: str | None):
    known = pool.config.all_languages
    if language is None:
        raise SpeechPeftError(
            "a Master-ASR adapter assembles the model per language; pass a language "
            f"(--language; it knows {', '.join(known)})"
        )
    code = language.strip().lower()
    if code not in known:
        raise SpeechPeftError(f"unknown language {language!r} for this Master-ASR adapter; it knows {', '.join(known)}")
    before, pool.current = pool.current, known.index(code)
    try:
        yield
    finally:
        pool.current = before


register_adapter("master", MasterConfig, MasterLinear)
