"""The server's adapters: found on disk as they appear, read and verified once, kept in a bank (LRU).

A request names an adapter folder under the server's adapter root. The first request for it reads
and verifies the file (checksum, layout, made for this base); the file stays in memory until the
folder changes on disk. Low-rank adapters live together in one adapter bank of at most
``capacity`` adapters; when a batch needs one the bank lacks, the least recently used adapter
that the batch does not need leaves and the bank is rebuilt from memory (no file is read again).
Kinds a bank cannot mix (a CTC head of their own, a model-level pool) are decoded one adapter at a
time, attached for their group and removed after it.

Only the decode worker's thread touches the model, so no two requests ever see each other's
adapter state.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..adapters import adapter_kind
from ..adapters.bank import bank_layers, load_bank_files, unload_bank
from ..adapters.catalog import AdapterEntry, find_adapters
from ..adapters.io import WEIGHTS, AdapterFile, check_adapter_base, read_adapter
from ..errors import SpeechPeftError
from ..models import ASRHost


class UnknownAdapter(SpeechPeftError):
    """The request names no adapter the server has (the message lists the ones it has)."""


@dataclass
class Loaded:
    file: AdapterFile
    stamp: float  # the weights file's mtime when it was read
    bankable: bool
    window: float | None


class AdapterPool:
    """Adapters under ``root`` for ``host``, at most ``capacity`` of them in the bank at once."""

    def __init__(self, host: ASRHost, root: str | Path | None, capacity: int = 16):
        if capacity < 1:
            raise SpeechPeftError(f"capacity must be >= 1, got {capacity}")
        self.host, self.root, self.capacity = host, Path(root) if root else None, capacity
        self._files: dict[str, Loaded] = {}
        self._bank: OrderedDict[str, None] = OrderedDict()  # LRU order; ids are the build order
        self._order: list[str] = []
        self._lock = threading.Lock()

    def catalog(self) -> list[AdapterEntry]:
        """Every adapter folder under the root now (a new folder is listed without a restart)."""
        return find_adapters(self.root) if self.root and self.root.is_dir() else []

    def folder(self, name: str) -> Path:
        """The folder of adapter ``name``, a path relative to the root that stays inside it.

        Raises:
            UnknownAdapter: no such adapter folder (the message names the available ones).
        """
        if self.root is not None and name and not Path(name).is_absolute() and ".." not in Path(name).parts:
            path = self.root / name
            if (path / WEIGHTS).is_file():
                return path
        names = [e.name for e in self.catalog()]
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise UnknownAdapter(f"no adapter {name!r}; available: {shown or '(none)'}")

    def get(self, name: str) -> Loaded:
        """The adapter, read and verified on first use (again only if its file changed).

        Raises:
            UnknownAdapter: no such adapter.
            SpeechPeftError: unreadable, or made for another base model.
        """
        path = self.folder(name)
        stamp = (path / WEIGHTS).stat().st_mtime
        with self._lock:
            cached = self._files.get(name)
            if cached is not None and cached.stamp == stamp:
                return cached
        af = read_adapter(path)
        check_adapter_base(self.host.model, af)
        lora = adapter_kind(af.kind).layer_cls.as_lora(af.tensors, af.targets, af.config)
        window = ((af.record or {}).get("host") or {}).get("window_seconds")
        loaded = Loaded(af, stamp, not af.modules and lora is not None, window)
        with self._lock:
            self._files[name] = loaded
            if name in self._bank:  # a changed file: the bank must be rebuilt with the new weights
                del self._bank[name]
                self._order = []
        return loaded

    def bank_ids(self, names: list[str | None]) -> list[int]:
        """Bank ids for ``names`` (None: -1, the bare model), rebuilding the bank if it lacks any.

        Raises:
            SpeechPeftError: more distinct adapters than the capacity, or one that cannot join a bank.
        """
        wanted = list(dict.fromkeys(n for n in names if n is not None))
        if len(wanted) > self.capacity:
            raise SpeechPeftError(f"{len(wanted)} adapters in one batch; the bank holds {self.capacity}")
        files = {n: self.get(n) for n in wanted}
        bad = [n for n, f in files.items() if not f.bankable]
        if bad:
            raise SpeechPeftError(f"adapter {bad[0]!r} ({files[bad[0]].file.kind}) cannot join a mixed batch")
        for n in wanted:
            self._bank[n] = None
            self._bank.move_to_end(n)
        while len(self._bank) > self.capacity:
            oldest = next(n for n in self._bank if n not in files)
            del self._bank[oldest]
        if wanted and (any(n not in self._order for n in wanted) or not bank_layers(self.host.model)):
            self._rebuild()
        return [-1 if n is None else self._order.index(n) for n in names]

    def _rebuild(self) -> None:
        unload_bank(self.host.model)
        self._order = list(self._bank)
        load_bank_files(self.host.model, [self._files[n].file for n in self._order])

    def clear(self) -> None:
        """Take the bank out of the model (before an adapter that decodes alone is attached)."""
        unload_bank(self.host.model)
        self._order = []
