"""The box's side of TUF: refresh trusted metadata from a USB folder or LAN mirror, list and fetch releases.

Trusted metadata lives on the persistent data partition (``[update] trusted_metadata_dir``). The clock guard
runs before and after the refresh: the high-water mark is the latest of the times the box checked for updates
at and the newest signing time it accepted (persisted beside the metadata and re-derived from the trusted
timestamp), so setting the clock back cannot make expired (frozen) metadata look fresh again. A clock wrongly
set into the future and then corrected blocks updates (not the appliance) until real time passes the mark;
``appliance update status`` shows it, and a service engineer removes ``clock-high-water.json`` after fixing the
clock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater  # type: ignore[attr-defined]

from appliance.fsio import atomic_write_bytes
from appliance.update.errors import (
    RepositoryUnavailable,
    TamperedTarget,
    UntrustedMetadata,
    UpdateError,
)
from appliance.update.fetchers import fetcher_for
from appliance.update.packs import file_digest
from appliance.update.policy import (
    ArtifactKind,
    ReleaseInfo,
    Version,
    check_clock,
    parse_floors,
    parse_release,
    parse_signed_at,
)

log = logging.getLogger(__name__)

#: File beside the trusted metadata holding the clock high-water mark.
HIGH_WATER_FILE = "clock-high-water.json"


def utc_now() -> datetime:
    """The system clock, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class RepositoryView:
    """What a verified refresh found: the releases on offer, the signed floors and the signing time."""

    releases: list[ReleaseInfo]
    floors: dict[ArtifactKind, Version]
    signed_at: datetime | None
    root_version: int
    targets_version: int


def _translate(exc: Exception, what: str) -> UpdateError:
    """Map python-tuf errors onto our hierarchy, naming the attack they indicate."""
    if isinstance(exc, tuf_exc.ExpiredMetadataError):
        return UntrustedMetadata(
            f"{what}: metadata expired ({exc}); a stale (frozen) repository was offered, get a fresh one"
        )
    if isinstance(exc, tuf_exc.EqualVersionNumberError | tuf_exc.BadVersionNumberError):
        return UntrustedMetadata(f"{what}: metadata older than what the box trusts or mixed versions ({exc}); refused")
    if isinstance(exc, tuf_exc.UnsignedMetadataError):
        return UntrustedMetadata(f"{what}: signatures do not meet the threshold of trusted keys ({exc}); refused")
    if isinstance(exc, tuf_exc.LengthOrHashMismatchError):
        return TamperedTarget(f"{what}: content does not match the signed length/hash ({exc}); refused")
    if isinstance(exc, tuf_exc.DownloadLengthMismatchError):
        return TamperedTarget(f"{what}: longer than the signed length ({exc}); refused")
    if isinstance(exc, tuf_exc.RepositoryError):
        return UntrustedMetadata(f"{what}: metadata failed verification ({exc}); refused")
    if isinstance(exc, tuf_exc.DownloadError):
        return RepositoryUnavailable(f"{what}: could not read the repository ({exc}); check the USB stick or mirror")
    return RepositoryUnavailable(f"{what}: {exc}")


class UpdateClient:
    """Verified access to one repository, with the box's trusted metadata in ``metadata_dir``."""

    def __init__(
        self,
        repository: str,
        metadata_dir: Path,
        bootstrap_root: bytes | None = None,
        clock: Callable[[], datetime] = utc_now,
        tolerance: timedelta = timedelta(minutes=5),
    ) -> None:
        if not repository:
            raise RepositoryUnavailable("no update repository configured; pass --repo or set [update] repository")
        self.repository = repository
        self.metadata_dir = Path(metadata_dir)
        self.bootstrap_root = bootstrap_root
        self.clock = clock
        self.tolerance = tolerance
        self._updater: Updater | None = None

    # ---------------------------------------------------------------------------------------- clock guard
    def high_water(self) -> datetime | None:
        """The newest signing time accepted so far (persisted mark, or the trusted timestamp's)."""
        marks: list[datetime] = []
        try:
            raw = json.loads((self.metadata_dir / HIGH_WATER_FILE).read_text())
            marks.append(datetime.fromisoformat(raw["high_water"]))
        except (OSError, ValueError, KeyError):
            pass
        try:
            ts = Metadata.from_bytes((self.metadata_dir / "timestamp.json").read_bytes())
            signed = parse_signed_at(ts.signed.unrecognized_fields)
            if signed is not None:
                marks.append(signed)
        except (OSError, ValueError, tuf_exc.RepositoryError, UpdateError):
            pass
        return max(marks) if marks else None

    def _raise_high_water(self, when: datetime) -> None:
        current = self.high_water()
        if current is None or when > current:
            atomic_write_bytes(
                self.metadata_dir / HIGH_WATER_FILE, json.dumps({"high_water": when.isoformat()}).encode()
            )

    # ---------------------------------------------------------------------------------------- refresh
    def refresh(self) -> RepositoryView:
        """Verify the repository's metadata (root chain, timestamp, snapshot, targets) and list its releases."""
        now = self.clock()
        check_clock(now, self.high_water(), None, self.tolerance)
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        # Time only goes forward on this box: every check that passed the guard moves the mark, so a clock set
        # back later (to make a frozen repository look fresh again) is caught even when the check itself failed.
        self._raise_high_water(now)
        bootstrap = None if (self.metadata_dir / "root.json").exists() else self.bootstrap_root
        if bootstrap is None and not (self.metadata_dir / "root.json").exists():
            raise UntrustedMetadata(
                f"no trusted root in {self.metadata_dir}; install the fleet's root.json once (--trusted-root)"
            )
        fetcher, meta_url, targets_url = fetcher_for(self.repository)
        try:
            updater = Updater(
                str(self.metadata_dir),
                meta_url,
                str(self.metadata_dir / "targets"),
                targets_url,
                fetcher,
                bootstrap=bootstrap,
            )
            # TUF compares expiry with its own reading of the clock; use the same (guarded) clock.
            trusted_set = getattr(updater, "_trusted_set", None)
            if trusted_set is not None and hasattr(trusted_set, "reference_time"):
                trusted_set.reference_time = now
            updater.refresh()
        except (tuf_exc.RepositoryError, tuf_exc.DownloadError) as exc:
            raise _translate(exc, f"repository {self.repository}") from exc
        except OSError as exc:
            raise RepositoryUnavailable(f"cannot use {self.repository} or {self.metadata_dir}: {exc}") from exc
        self._updater = updater
        targets_md: Any = Metadata.from_bytes((self.metadata_dir / "targets.json").read_bytes())
        ts_md = Metadata.from_bytes((self.metadata_dir / "timestamp.json").read_bytes())
        root_md = Metadata.from_bytes((self.metadata_dir / "root.json").read_bytes())
        signed_at = parse_signed_at(ts_md.signed.unrecognized_fields)
        check_clock(now, None, signed_at, self.tolerance)
        if signed_at is not None:
            self._raise_high_water(signed_at)
        releases = [
            parse_release(path, tf.length, tf.hashes, tf.custom) for path, tf in targets_md.signed.targets.items()
        ]
        return RepositoryView(
            releases=releases,
            floors=parse_floors(targets_md.signed.unrecognized_fields),
            signed_at=signed_at,
            root_version=int(root_md.signed.version),
            targets_version=int(targets_md.signed.version),
        )

    def fetch(self, release: ReleaseInfo, dest_dir: Path) -> Path:
        """Download one release into ``dest_dir``, verified by TUF, then re-hashed from disk after fsync."""
        if self._updater is None:
            raise UpdateError("refresh() must succeed before fetch(); this is a programming error")
        try:
            info = self._updater.get_targetinfo(release.path)
        except (tuf_exc.RepositoryError, tuf_exc.DownloadError) as exc:
            raise _translate(exc, release.path) from exc
        if info is None:
            raise UntrustedMetadata(f"{release.path} is not in the signed targets; the repository changed mid-update")
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / Path(release.path).name
        try:
            self._updater.download_target(info, str(dest))
        except (tuf_exc.RepositoryError, tuf_exc.DownloadError) as exc:
            raise _translate(exc, release.path) from exc
        except OSError as exc:
            raise RepositoryUnavailable(f"{release.path}: could not read or store it ({exc})") from exc
        size, sha = file_digest(dest)
        if (size, sha) != (release.length, release.sha256):
            raise TamperedTarget(f"{dest} changed on disk after verification; check the data partition")
        return dest


def release_summary(view: RepositoryView) -> dict[str, Any]:
    """A JSON-ready summary of a refresh (for ``appliance update verify``)."""
    return {
        "root_version": view.root_version,
        "targets_version": view.targets_version,
        "signed_at": view.signed_at.isoformat() if view.signed_at else None,
        "floors": {k.value: ".".join(map(str, v)) for k, v in view.floors.items()},
        "releases": [
            {
                "path": r.path,
                "kind": r.kind.value,
                "name": r.name,
                "version": r.version_text,
                "length": r.length,
                "sha256": r.sha256,
            }
            for r in sorted(view.releases, key=lambda r: (r.kind.value, r.version))
        ],
    }
