"""The pure verification core: version order, floors, clock guard, compatibility, manifests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.update.errors import (
    ClockSkew,
    DowngradeRefused,
    IncompatibleEngine,
    TamperedTarget,
    UntrustedMetadata,
)
from appliance.update.policy import (
    CUSTOM_KEY,
    BoxProfile,
    FloorDecision,
    check_clock,
    check_compatibility,
    check_floor,
    compare_manifest,
    format_version,
    parse_manifest,
    parse_release,
    parse_version,
    verify_digest,
)

versions = st.lists(st.integers(0, 999), min_size=1, max_size=4).map(lambda p: ".".join(map(str, p)))


@given(versions, versions)
def test_version_order_is_numeric(a: str, b: str) -> None:
    """1.10 > 1.9 (numeric, not text) and trailing zeros do not matter."""
    va, vb = parse_version(a), parse_version(b)
    pad = lambda v: tuple(v) + (0,) * (4 - len(v))  # noqa: E731
    assert (va < vb) == (pad(va) < pad(vb))
    assert parse_version(format_version(va)) == va


@pytest.mark.parametrize("bad", ["", "1.x", "v1.2", "1..2", "-1", "1.2.3.4.5"])
def test_bad_versions_refused(bad: str) -> None:
    with pytest.raises(UntrustedMetadata):
        parse_version(bad)


@pytest.mark.req("REQ-UPD-005")
@given(versions, versions, versions)
def test_floor_decisions(candidate: str, signed: str, local: str) -> None:
    """Below the signed floor: always refused; below the local floor: refused without authorisation."""
    c, s, lf = parse_version(candidate), parse_version(signed), parse_version(local)
    if c < s:
        with pytest.raises(DowngradeRefused):
            check_floor(c, s, lf, "authorised")
        return
    if c < lf:
        with pytest.raises(DowngradeRefused):
            check_floor(c, s, lf, None)
        assert check_floor(c, s, lf, "ticket 1") is FloorDecision.AUTHORISED_DOWNGRADE
    else:
        assert check_floor(c, s, lf, None) in (FloorDecision.UPGRADE, FloorDecision.REINSTALL)


@pytest.mark.req("REQ-UPD-007")
def test_clock_guard() -> None:
    t = datetime(2026, 11, 27, tzinfo=UTC)
    tol = timedelta(minutes=5)
    check_clock(t, t - timedelta(days=1), t, tol)
    check_clock(t - timedelta(minutes=4), t, t, tol)  # within tolerance
    with pytest.raises(ClockSkew):
        check_clock(t - timedelta(hours=1), t, None, tol)
    with pytest.raises(ClockSkew):
        check_clock(t - timedelta(hours=1), None, t, tol)


@pytest.mark.req("REQ-UPD-014")
def test_engine_compatibility_ignores_trt_build_number() -> None:
    custom = {
        CUSTOM_KEY: {
            "kind": "engine",
            "name": "e",
            "version": "1.0",
            "engine": {"tensorrt": "10.3.0.26", "compute_capabilities": ["8.9"]},
        }
    }
    release = parse_release("engine/e-1.0.0.tar", 1, {"sha256": "0" * 64}, custom)
    check_compatibility(release, BoxProfile((1,), "8.9", "10.3.0.30"))
    with pytest.raises(IncompatibleEngine):
        check_compatibility(release, BoxProfile((1,), "8.9", "10.4.0"))
    with pytest.raises(IncompatibleEngine):
        check_compatibility(release, BoxProfile((1,), "9.0", "10.3.0"))


def test_engine_pack_without_requirements_is_untrusted() -> None:
    with pytest.raises(UntrustedMetadata, match="TensorRT"):
        parse_release(
            "engine/e-1.tar", 1, {"sha256": "0" * 64}, {CUSTOM_KEY: {"kind": "engine", "name": "e", "version": "1"}}
        )
    with pytest.raises(UntrustedMetadata, match="custom metadata"):
        parse_release("app/a-1.tar", 1, {"sha256": "0" * 64}, {})


@pytest.mark.req("REQ-UPD-001")
def test_digest_and_manifest_checks() -> None:
    import hashlib

    data = b"release bytes"
    sha = hashlib.sha256(data).hexdigest()
    verify_digest("x", data, len(data), sha)
    with pytest.raises(TamperedTarget, match="truncated"):
        verify_digest("x", data[:-1], len(data), sha)
    with pytest.raises(TamperedTarget):
        verify_digest("x", b"Release bytes", len(data), sha)
    for unsafe in ("../etc/passwd", "/abs", "a/./b", "MANIFEST.json"):
        with pytest.raises(TamperedTarget, match="unsafe"):
            parse_manifest(f'{{"files": {{"{unsafe}": {{"size": 1, "sha256": "{sha}"}}}}}}'.encode())
    expected = parse_manifest(f'{{"files": {{"a": {{"size": 13, "sha256": "{sha}"}}}}}}'.encode())
    compare_manifest(expected, {"a": (13, sha)})
    with pytest.raises(TamperedTarget, match="not in the manifest"):
        compare_manifest(expected, {"a": (13, sha), "extra": (1, sha)})
    with pytest.raises(TamperedTarget, match="missing"):
        compare_manifest(expected, {})
