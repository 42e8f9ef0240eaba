"""The audit trail stays the service user's when root writes to it.

Root-run steps (the unit's ``ExecStartPre=+appliance update recover`` at every start, a service engineer's
``sudo appliance update install``) may be the first to open the audit trail on a fresh box: SQLite then creates
the database, its ``-wal`` and ``-shm`` files owned by root, and ``appliance serve``, running as the service user,
can no longer open it and restarts in a loop (found booting the image in a VM). After such a step the files are
handed to the owner of the folder holding them, the service user on a box.
"""

from __future__ import annotations

import os
from pathlib import Path

#: SQLite's companion files next to a database.
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def hand_to_folder_owner(database: Path) -> list[Path]:
    """Give ``database`` and its SQLite companion files to the owner of their folder; returns what changed.

    Does nothing unless the process runs as root (only root can give files away, and only root-run steps can leave
    root-owned files) or when the folder is root's own.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    try:
        folder = database.parent.stat()
    except FileNotFoundError:
        return []
    if folder.st_uid == 0:
        return []
    changed: list[Path] = []
    for suffix in SQLITE_COMPANIONS:
        path = database.with_name(database.name + suffix)
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if (st.st_uid, st.st_gid) != (folder.st_uid, folder.st_gid):
            os.chown(path, folder.st_uid, folder.st_gid, follow_symlinks=False)
            changed.append(path)
    return changed
