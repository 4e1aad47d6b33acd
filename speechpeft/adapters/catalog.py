"""Finding adapters on disk: every adapter directory under a folder or matching a glob.

Demos and servers list what a user could pick: ``find_adapters("runs/*/adapter")`` or
``find_adapters("adapters/")``. Each entry is read and verified once (checksum, layout); one
that fails is listed with its one-line error instead of being dropped, so that a user sees
why the adapter they copied in does not appear as usable.
"""

from __future__ import annotations

import dataclasses
import glob
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpeechPeftError
from .io import WEIGHTS, read_adapter, summarize_adapter

MAX_DEPTH = 3  # a folder is searched this many levels down for adapter directories


@dataclass(frozen=True)
class AdapterEntry:
    """One adapter directory and what its record says (``error`` set when it cannot be read)."""

    name: str  # unique among the entries: the folder's path relative to its search root
    path: Path
    kind: str | None = None
    base_model: str | None = None
    parameters: int | None = None
    window_seconds: float | None = None
    error: str | None = None

    def label(self) -> str:
        """``name · kind · base`` for a menu."""
        if self.error:
            return f"{self.name} (unreadable)"
        return f"{self.name} · {self.kind} · {self.base_model or 'unrecorded base'}"


def find_adapters(specs: str | Path | Iterable[str | Path]) -> list[AdapterEntry]:
    """Adapter directories under each folder (searched ``MAX_DEPTH`` levels down) or matching each glob.

    Directories are recognised by their ``adapter_model.safetensors``; a spec that matches nothing
    adds nothing. Entries are sorted by name and unique by resolved path.
    """
    if isinstance(specs, (str, Path)):
        specs = [specs]
    found: dict[Path, AdapterEntry] = {}
    for spec in specs:
        for folder, root in _candidates(str(spec)):
            key = folder.resolve()
            if key not in found:
                found[key] = _entry(folder, root)
    names: dict[str, int] = {}
    entries = []
    for entry in sorted(found.values(), key=lambda e: (e.name, str(e.path))):
        n = names.get(entry.name, 0)
        names[entry.name] = n + 1
        entries.append(entry if n == 0 else dataclasses.replace(entry, name=f"{entry.name}#{n + 1}"))
    return entries


def _candidates(spec: str) -> list[tuple[Path, Path]]:
    """(adapter folder, the root its name is relative to) for one spec."""
    path = Path(spec)
    if path.is_dir() and not glob.has_magic(spec):
        if (path / WEIGHTS).is_file():
            return [(path, path.parent)]
        out = []
        for depth in range(1, MAX_DEPTH + 1):
            out += [(w.parent, path) for w in sorted(path.glob("/".join(["*"] * depth) + "/" + WEIGHTS))]
        return out
    return [(Path(m), Path(".")) for m in sorted(glob.glob(spec)) if (Path(m) / WEIGHTS).is_file()]


def _entry(folder: Path, root: Path) -> AdapterEntry:
    try:
        name = folder.relative_to(root).as_posix()
    except ValueError:
        name = folder.as_posix()
    try:
        af = read_adapter(folder)
    except SpeechPeftError as e:
        return AdapterEntry(name, folder, error=str(e))
    summary = summarize_adapter(af)
    host = (af.record or {}).get("host") or {}
    return AdapterEntry(
        name=name,
        path=folder,
        kind=af.kind,
        base_model=(af.record or {}).get("base_model"),
        parameters=int(summary["parameters"]["stored"]),
        window_seconds=host.get("window_seconds"),
    )
