"""The pure verification core: decisions over already-parsed data, no I/O, no clock, no TUF objects.

Everything here takes values (versions, signed custom metadata as mappings, digests, the box's profile, times)
and either returns a decision or raises an :class:`~appliance.update.errors.UpdateError`. The edges
(:mod:`appliance.update.client`, :mod:`appliance.update.install`) read files, ask TUF and call these.

TUF itself already rejects tampered targets, wrong keys, unmet thresholds, expired (frozen), replayed and
mix-and-match metadata. What it leaves open is closed here:

* version floors: a floor per artifact kind signed into the targets metadata (a security fix the publisher
  says must never be undone) and a local floor (the newest release this box confirmed); going below the
  local floor needs an explicit authorisation, going below the signed floor is never allowed;
* clock sanity: TUF's expiry checks are only as good as the system clock, so a clock earlier than a persisted
  high-water mark (the newest signing time / check time the box has seen) is refused;
* box compatibility: engine packs against GPU compute capability and TensorRT version, releases against the
  OS image version.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from appliance.update.errors import (
    ClockSkew,
    DowngradeRefused,
    IncompatibleEngine,
    IncompatibleOS,
    TamperedTarget,
    UntrustedMetadata,
)

#: Namespace of our fields inside TUF ``custom`` / unrecognized fields.
CUSTOM_KEY = "x-appliance"
#: Targets-level signed field: ``{kind: floor version}``.
FLOORS_KEY = "x-appliance-version-floors"
#: Timestamp/targets signed field: ISO-8601 UTC time of signing.
SIGNED_AT_KEY = "x-appliance-signed-at"
#: The file inside every pack listing its files and their SHA-256.
MANIFEST_NAME = "MANIFEST.json"

_VERSION_RE = re.compile(r"^\d{1,6}(\.\d{1,6}){0,3}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ArtifactKind(enum.StrEnum):
    """What an update artifact is; each kind has its own ``current``/``previous`` slot on the box."""

    APP = "app"
    MODEL = "model"
    ENGINE = "engine"
    CONFIG = "config"


Version = tuple[int, ...]


def parse_version(text: str) -> Version:
    """``"1.2.3"`` -> ``(1, 2, 3)``; trailing zeros are insignificant (``1.2`` == ``1.2.0``)."""
    if not isinstance(text, str) or not _VERSION_RE.match(text):
        raise UntrustedMetadata(f"version {text!r} is not dotted numbers like 1.2.3; fix the release metadata")
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def format_version(version: Version) -> str:
    """Inverse of :func:`parse_version` (at least ``major.minor.patch``)."""
    parts = list(version) + [0] * max(0, 3 - len(version))
    return ".".join(str(p) for p in parts)


@dataclass(frozen=True)
class EngineRequirement:
    """What a TensorRT engine pack was built for."""

    tensorrt: str
    compute_capabilities: tuple[str, ...]


@dataclass(frozen=True)
class ReleaseInfo:
    """One signed artifact as described by its TUF target entry and our custom fields."""

    path: str
    kind: ArtifactKind
    name: str
    version: Version
    length: int
    sha256: str
    min_os: Version | None = None
    engine: EngineRequirement | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def version_text(self) -> str:
        """The version as text."""
        return format_version(self.version)


def target_path(kind: ArtifactKind, name: str, version: str) -> str:
    """Where an artifact lives in the repository: ``<kind>/<name>-<version>.tar``."""
    return f"{kind.value}/{name}-{version}.tar"


def parse_release(path: str, length: int, hashes: Mapping[str, str], custom: Mapping[str, Any] | None) -> ReleaseInfo:
    """Validate a target entry's signed custom metadata into a :class:`ReleaseInfo`."""
    ours = (custom or {}).get(CUSTOM_KEY)
    if not isinstance(ours, Mapping):
        raise UntrustedMetadata(
            f"target {path} has no '{CUSTOM_KEY}' custom metadata; rebuild it with appliance update build"
        )
    try:
        kind = ArtifactKind(str(ours.get("kind")))
    except ValueError as exc:
        raise UntrustedMetadata(f"target {path}: unknown kind {ours.get('kind')!r}") from exc
    name = ours.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise UntrustedMetadata(f"target {path}: name {name!r} is not a short lower-case identifier")
    version = parse_version(str(ours.get("version")))
    sha = hashes.get("sha256")
    if not isinstance(sha, str) or not _SHA256_RE.match(sha):
        raise UntrustedMetadata(f"target {path} carries no sha256; the repository must list sha256 for every target")
    min_os = ours.get("min_os")
    engine: EngineRequirement | None = None
    if kind is ArtifactKind.ENGINE:
        req = ours.get("engine")
        if not isinstance(req, Mapping) or not isinstance(req.get("tensorrt"), str):
            raise UntrustedMetadata(f"engine pack {path} does not say which TensorRT version it was built for")
        ccs = req.get("compute_capabilities")
        if not isinstance(ccs, list) or not ccs or not all(isinstance(c, str) for c in ccs):
            raise UntrustedMetadata(f"engine pack {path} does not list the GPU compute capabilities it was built for")
        engine = EngineRequirement(req["tensorrt"], tuple(ccs))
    known = {"kind", "name", "version", "min_os", "engine"}
    return ReleaseInfo(
        path=path,
        kind=kind,
        name=name,
        version=version,
        length=int(length),
        sha256=sha,
        min_os=parse_version(str(min_os)) if min_os is not None else None,
        engine=engine,
        extra={k: v for k, v in ours.items() if k not in known},
    )


def parse_floors(signed_fields: Mapping[str, Any]) -> dict[ArtifactKind, Version]:
    """The signed version floors from the targets metadata's unrecognized fields."""
    raw = signed_fields.get(FLOORS_KEY, {})
    if not isinstance(raw, Mapping):
        raise UntrustedMetadata(f"targets field {FLOORS_KEY} must map kinds to versions")
    floors: dict[ArtifactKind, Version] = {}
    for kind_text, version in raw.items():
        try:
            kind = ArtifactKind(kind_text)
        except ValueError as exc:
            raise UntrustedMetadata(f"{FLOORS_KEY}: unknown kind {kind_text!r}") from exc
        floors[kind] = parse_version(str(version))
    return floors


def parse_signed_at(signed_fields: Mapping[str, Any]) -> datetime | None:
    """The signing time a timestamp/targets metadata carries, or None when the publisher did not write one."""
    raw = signed_fields.get(SIGNED_AT_KEY)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as exc:
        raise UntrustedMetadata(f"{SIGNED_AT_KEY} {raw!r} is not an ISO-8601 time") from exc
    if value.tzinfo is None:
        raise UntrustedMetadata(f"{SIGNED_AT_KEY} {raw!r} has no time zone")
    return value


def select_release(releases: list[ReleaseInfo], kind: ArtifactKind, version: str | None = None) -> ReleaseInfo:
    """The newest release of ``kind`` (or exactly ``version``); UpdateError-free lookups raise UntrustedMetadata."""
    candidates = [r for r in releases if r.kind is kind]
    if version is not None:
        wanted = parse_version(version)
        candidates = [r for r in candidates if r.version == wanted]
    if not candidates:
        what = f"{kind.value} {version}" if version else kind.value
        raise UntrustedMetadata(f"the repository offers no signed {what} release; check the USB stick or mirror")
    return max(candidates, key=lambda r: r.version)


class FloorDecision(enum.StrEnum):
    """How an install relates to the floors."""

    UPGRADE = "upgrade"
    REINSTALL = "reinstall"
    AUTHORISED_DOWNGRADE = "authorised-downgrade"


def check_floor(
    candidate: Version,
    signed_floor: Version | None,
    local_floor: Version | None,
    authorisation: str | None,
) -> FloorDecision:
    """Refuse a release below the signed floor always, below the local floor unless authorised."""
    if signed_floor is not None and candidate < signed_floor:
        raise DowngradeRefused(
            f"release {format_version(candidate)} is below the signed version floor {format_version(signed_floor)}; "
            "the publisher marked older releases unsafe, so no authorisation can install it"
        )
    if local_floor is None or candidate > local_floor:
        return FloorDecision.UPGRADE
    if candidate == local_floor:
        return FloorDecision.REINSTALL
    if not authorisation or not authorisation.strip():
        raise DowngradeRefused(
            f"release {format_version(candidate)} is older than the installed floor {format_version(local_floor)}; "
            "a downgrade needs an explicit, audited authorisation (--authorise-downgrade REASON)"
        )
    return FloorDecision.AUTHORISED_DOWNGRADE


def check_clock(now: datetime, high_water: datetime | None, signed_at: datetime | None, tolerance: timedelta) -> None:
    """Refuse when ``now`` is earlier than time already seen (high-water mark) or than the newest signing time."""
    if high_water is not None and now < high_water - tolerance:
        raise ClockSkew(
            f"the system clock ({now.isoformat()}) is earlier than the newest time this box has seen "
            f"({high_water.isoformat()}); set the clock (NTP or BIOS) before updating"
        )
    if signed_at is not None and now < signed_at - tolerance:
        raise ClockSkew(
            f"the system clock ({now.isoformat()}) is earlier than the repository's signing time "
            f"({signed_at.isoformat()}); set the clock (NTP or BIOS) before updating"
        )


@dataclass(frozen=True)
class BoxProfile:
    """What the box offers: its OS image version, GPU compute capability, TensorRT version."""

    os_version: Version
    compute_capability: str | None = None
    tensorrt_version: str | None = None
    gpu_expected: bool = False


def _trt_series(text: str) -> tuple[int, ...]:
    """TensorRT engines are tied to major.minor.patch (the build number is irrelevant)."""
    return parse_version(".".join(text.split(".")[:3]))


def check_compatibility(release: ReleaseInfo, box: BoxProfile) -> None:
    """Refuse releases the box cannot run: newer OS needed, or an engine built for another GPU/TensorRT."""
    if release.min_os is not None and box.os_version < release.min_os:
        raise IncompatibleOS(
            f"{release.name} {release.version_text} needs OS image {format_version(release.min_os)} or newer, the box "
            f"runs {format_version(box.os_version)}; install the OS update (RAUC bundle) first"
        )
    if release.engine is None:
        return
    req = release.engine
    if box.tensorrt_version is None or box.compute_capability is None:
        raise IncompatibleEngine(
            f"engine pack {release.name} {release.version_text} needs TensorRT {req.tensorrt} on a GPU with compute "
            "capability "
            + "/".join(req.compute_capabilities)
            + ", but this box has "
            + ("no TensorRT runtime" if box.tensorrt_version is None else "no NVIDIA GPU visible")
            + "; refused, the ONNX fallback stays active"
        )
    if _trt_series(box.tensorrt_version) != _trt_series(req.tensorrt):
        raise IncompatibleEngine(
            f"engine pack {release.name} {release.version_text} was built with TensorRT {req.tensorrt}, the box runs "
            f"{box.tensorrt_version}; refused, the ONNX fallback stays active (publish an engine pack for this version)"
        )
    if box.compute_capability not in req.compute_capabilities:
        raise IncompatibleEngine(
            f"engine pack {release.name} {release.version_text} was built for compute capability "
            + "/".join(req.compute_capabilities)
            + f", the box's GPU is {box.compute_capability}; refused, the ONNX fallback stays active"
        )


def verify_digest(what: str, data: bytes, length: int, sha256: str) -> None:
    """Refuse bytes whose length or SHA-256 differ from the signed values."""
    if len(data) != length:
        raise TamperedTarget(f"{what}: {len(data)} bytes, signed length {length}; the copy is truncated or altered")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise TamperedTarget(f"{what}: SHA-256 {digest} differs from the signed {sha256}; the artifact was altered")


def parse_manifest(data: bytes) -> dict[str, tuple[int, str]]:
    """A pack's MANIFEST.json -> ``{relative path: (size, sha256)}``, refusing unsafe paths."""
    try:
        raw = json.loads(data)
        files = raw["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TamperedTarget(f"{MANIFEST_NAME} is not valid: {exc}; rebuild the pack") from exc
    out: dict[str, tuple[int, str]] = {}
    if not isinstance(files, Mapping):
        raise TamperedTarget(f"{MANIFEST_NAME}: 'files' must be a mapping")
    for rel, entry in files.items():
        parts = str(rel).split("/")
        if not rel or str(rel).startswith("/") or any(p in ("", ".", "..") for p in parts) or rel == MANIFEST_NAME:
            raise TamperedTarget(f"{MANIFEST_NAME} lists an unsafe path {rel!r}")
        if not isinstance(entry, Mapping) or not _SHA256_RE.match(str(entry.get("sha256", ""))):
            raise TamperedTarget(f"{MANIFEST_NAME}: entry {rel!r} has no valid sha256")
        out[str(rel)] = (int(entry.get("size", -1)), str(entry["sha256"]))
    return out


def compare_manifest(expected: Mapping[str, tuple[int, str]], actual: Mapping[str, tuple[int, str]]) -> None:
    """Every listed file present with its size and hash, and nothing unlisted."""
    problems: list[str] = []
    for rel, (size, sha) in sorted(expected.items()):
        got = actual.get(rel)
        if got is None:
            problems.append(f"{rel} missing")
        elif got != (size, sha):
            problems.append(f"{rel} differs")
    problems += [f"{rel} not in the manifest" for rel in sorted(set(actual) - set(expected))]
    if problems:
        raise TamperedTarget("release files do not match the signed manifest: " + ", ".join(problems[:10]))
