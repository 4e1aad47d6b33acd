"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then rename the temp file over ``path``.

    The temp file lives in the same folder, so the rename is atomic on POSIX. If ``write``
    raises, the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_dir(out: Path, write: Callable[[Path], None]) -> None:
    """Build the directory beside ``out`` and swap it into place; on failure nothing remains.

    Where ``out`` exists, the new directory and the old one trade places in one atomic step
    (Linux ``renameat2(RENAME_EXCHANGE)``), so a reader, or a process killed at any instant,
    sees the old directory whole or the new one whole. Elsewhere two renames are used, and a
    directory left aside by a kill between them is put back by the next call.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    aside = out.with_name(f".{out.name}.old")
    if aside.exists() and not out.exists():  # a two-rename swap was interrupted: undo it
        aside.rename(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual mode
        write(tmp)
        if out.exists():
            _exchange(tmp, out, aside)
            shutil.rmtree(tmp, ignore_errors=True)  # now holds the old directory
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exchange(new: Path, out: Path, aside: Path) -> None:
    """Swap the paths ``new`` and ``out``: ``out`` becomes the new directory, ``new`` the old one."""
    if _renameat2_exchange(new, out):
        return
    shutil.rmtree(aside, ignore_errors=True)
    out.rename(aside)
    new.rename(out)
    aside.rename(new)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with Linux's renameat2; False where that is unavailable."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        rename = libc.renameat2
    except (OSError, AttributeError):
        return False
    if rename(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # kernel or filesystem without it
        return False
    raise OSError(err, f"cannot swap '{a}' and '{b}': {os.strerror(err)}")


def remove_leftovers(folder: Path, names: list[str]) -> None:
    """Remove temp files and folders that a killed ``atomic_write``/``atomic_dir`` left beside ``names``."""
    for name in names:
        for stale in Path(folder).glob(f".{name}.*"):
            if stale.name == f".{name}.old":  # atomic_dir's own to put back, never to delete
                continue
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def link_or_copy(src: Path, dst: Path) -> None:
    """Put ``src`` (a file or a folder) at ``dst`` as hard links where possible, else copies."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy_file)
    else:
        _link_or_copy_file(src, dst)


def _link_or_copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
