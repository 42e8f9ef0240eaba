"""Whether root may run or trust what lies below a folder: nobody but root can write or rename any part of it.

The installed releases are run by root (``ExecStartPre=+... update recover``, the firewall renderer) and the
trusted update metadata decides what root installs. A folder below one the service user owns would let that user
rename it away and plant code root then runs, so the box keeps both in the root-owned
``/var/lib/appliance-system`` (docs/updates.md) and ``appliance update`` refuses, as root, any other layout.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from appliance.update.errors import UnsafeInstallRoot

#: Owners that may write the folders root trusts: root only.
TRUSTED_OWNERS: frozenset[int] = frozenset({0})


def _chain(path: Path, top: Path) -> list[Path]:
    """``top`` and every folder from it down to ``path`` (both absolute; ``path`` below or equal to ``top``)."""
    rel = path.relative_to(top)
    chain = [top]
    for part in rel.parts:
        chain.append(chain[-1] / part)
    return chain


def writable_by_others(path: Path, top: Path = Path("/"), owners: frozenset[int] = TRUSTED_OWNERS) -> list[str]:
    """Why someone other than ``owners`` could change what ``path`` holds: one line per folder on the way.

    Checks ``top`` and each existing component down to ``path`` (not following a symlink at any of them): owned
    by someone else, or group/world writable without the sticky bit (a sticky folder keeps others from renaming
    root's entries, as /tmp does). A missing component ends the walk (the installer creates it as root).
    """
    path, top = Path(os.path.abspath(path)), Path(os.path.abspath(top))
    problems: list[str] = []
    for folder in _chain(path, top):
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            break
        if st.st_uid not in owners:
            problems.append(f"{folder} is owned by uid {st.st_uid}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            problems.append(f"{folder} is writable by its group or everyone ({stat.filemode(st.st_mode)})")
    return problems


def require_root_owned(what: str, path: Path) -> None:
    """Refuse (as root) to run or trust anything below ``path`` when another user could change it."""
    problems = writable_by_others(path)
    if problems:
        raise UnsafeInstallRoot(
            f"refusing to use the {what} {path} as root: {'; '.join(problems)}. Another user could plant code or "
            "metadata there that root would then run or trust; keep it in a root-owned folder such as "
            "/var/lib/appliance-system (docs/updates.md)"
        )
