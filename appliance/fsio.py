"""Crash-safe file operations, the one implementation the whole box uses.

Temporary file in the target's folder + fsync + ``os.replace`` (+ directory fsync), so a reader or a box that
loses power sees the old content or the new, never a mix; atomic symlink switch; fsync of whole trees.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after creating, renaming or removing something inside it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: Path, mode: int | None = None, sync_dir: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; on success fsync it and rename it over ``path``.

    ``mode`` sets the final permission bits (the temporary file is created 0600, which suits keys). On any
    exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    with atomic_output(path, mode) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically: a symlink under a temporary name, then ``os.replace``."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp-link")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (files first, then their directories)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # linux/fs.h
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP)


@functools.cache
def _libc_renameat2() -> Any:
    """The C library's ``renameat2`` (None where it lacks one); looked up once."""
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None


def _renameat2(a: Path, b: Path, flags: int) -> int:
    """0 when ``renameat2(a, b, flags)`` succeeded, else its errno (``ENOSYS`` where the C library lacks it)."""
    renameat2 = _libc_renameat2()
    if renameat2 is None:
        return errno.ENOSYS
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flags) == 0:
        return 0
    return ctypes.get_errno()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one ``renameat2(RENAME_EXCHANGE)``; False where the C library or file system lacks it."""
    err = _renameat2(a, b, _RENAME_EXCHANGE)
    if err == 0:
        return True
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def rename_noreplace(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (then False, nothing changed), atomically: one
    ``renameat2(RENAME_NOREPLACE)``, or where the kernel or file system lacks it a hard link (which fails on an
    existing name just as atomically) and the removal of ``src``. The caller fsyncs the folder."""
    err = _renameat2(src, dst, _RENAME_NOREPLACE)
    if err == 0:
        return True
    if err == errno.EEXIST:
        return False
    if err not in _UNSUPPORTED:
        raise OSError(err, os.strerror(err), str(src), None, str(dst))
    try:
        os.link(src, dst)
    except FileExistsError:
        return False
    os.unlink(src)
    return True


def replace_dir(staging: Path, target: Path) -> None:
    """Put the complete folder ``staging`` at ``target`` (same file system), replacing the folder there if any.

    Where the kernel allows, the two folders are swapped in one atomic ``renameat2(RENAME_EXCHANGE)``: a reader sees
    the old folder or the new, never neither. Elsewhere the old folder is first renamed aside (restored if the second
    rename fails). The old folder is removed only after the new one is in place and its parent flushed, so a failure
    at any step leaves a complete folder at ``target`` (or, after a power cut in the fallback's one gap, the complete
    old folder beside it under a dot-name).
    """
    if not target.exists():
        os.rename(staging, target)
        fsync_dir(target.parent)
        return
    if _exchange(staging, target):
        fsync_dir(target.parent)
        shutil.rmtree(staging)
        return
    aside = target.with_name(f".{target.name}.replaced-{os.getpid()}")
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        raise
    fsync_dir(target.parent)
    shutil.rmtree(aside)
