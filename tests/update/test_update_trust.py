"""Acceptance tests: the attacks TUF and our additions (floors, clock guard) defend against.

Every test names the attack or fault it simulates; the box must refuse and keep its running release.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from update_fleet import Fleet, now, shift

from appliance.update.errors import ClockSkew, DowngradeRefused, TamperedTarget, UntrustedMetadata
from appliance.update.packs import verify_release_dir


@pytest.fixture
def mirror(fleet: Fleet) -> Iterator[str]:
    """The fleet's repository served by a LAN HTTP mirror on 127.0.0.1 (random free port)."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(fleet.repo.root_dir))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.req("REQ-UPD-001", "REQ-UPD-008", "REQ-UPD-009", "REQ-UPD-010")
def test_valid_install_from_usb_folder(fleet: Fleet) -> None:
    """Fault: none. A correctly signed release on a USB folder installs, verified, into a versioned folder."""
    fleet.publish(version="1.0.0", files={"app.py": b"print('v1')\n"})
    result = fleet.update()
    assert (result.version, result.decision) == ("1.0.0", "upgrade")
    current = fleet.install_root / "app" / "current"
    assert current.is_symlink() and (current / "app.py").read_bytes() == b"print('v1')\n"
    assert verify_release_dir(current)["version"] == "1.0.0"
    assert (fleet.metadata_dir / "root.json").exists() and (fleet.metadata_dir / "timestamp.json").exists()
    fleet.publish(version="1.1.0", files={"app.py": b"print('v1.1')\n"})
    result = fleet.update()
    assert (result.version, result.previous) == ("1.1.0", "1.0.0")
    assert fleet.installer().link_version(result.kind, "previous") == "1.0.0"
    records = [r for r in fleet.installer().audit.records() if r.action == "update.installed"]  # type: ignore[union-attr]
    assert [r.details["version"] for r in records] == ["1.0.0", "1.1.0"]
    assert all(len(r.details["sha256"]) == 64 for r in records)


@pytest.mark.req("REQ-UPD-008")
def test_valid_install_from_lan_http_mirror(fleet: Fleet, mirror: str) -> None:
    """Fault: none. The same repository read from a LAN HTTP mirror (python-tuf custom fetcher)."""
    fleet.publish(version="1.0.0")
    assert fleet.update(repository=mirror).version == "1.0.0"
    fleet.publish(version="1.2.0")
    assert fleet.update(repository=mirror).version == "1.2.0"


@pytest.mark.req("REQ-UPD-001", "REQ-SAFE-500")
def test_tampered_target_is_refused(fleet: Fleet) -> None:
    """Attack: an artifact on the stick altered after signing (one byte flipped)."""
    fleet.publish(version="1.0.0")
    fleet.update()
    fleet.publish(version="2.0.0")
    stored = next(p for p in (fleet.repo.targets_dir / "app").iterdir() if p.name.endswith("or-appliance-2.0.0.tar"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(TamperedTarget):
        fleet.update()
    assert fleet.current() == "1.0.0"
    assert "update.refused" in fleet.audit_actions()


@pytest.mark.req("REQ-UPD-002", "REQ-SAFE-500")
def test_wrong_key_is_refused(fleet: Fleet) -> None:
    """Attack: targets metadata signed with an attacker's key (snapshot/timestamp re-signed too)."""
    fleet.publish(version="1.0.0")
    fleet.update()
    attacker = {role: [CryptoSigner.generate_ed25519()] for role in ("targets", "snapshot", "timestamp")}
    fleet.publish(version="9.9.9", signers={"root": [], **attacker})
    with pytest.raises(UntrustedMetadata, match=r"threshold"):
        fleet.update()
    assert fleet.current() == "1.0.0"
    assert fleet.audit_actions()[-1] == "update.refused"


@pytest.mark.req("REQ-UPD-002")
def test_signature_threshold_not_met(tmp_path: Path) -> None:
    """Attack: one compromised targets key when the role needs two signatures."""
    fleet = Fleet(tmp_path)
    fleet.create(thresholds={"targets": 2})
    one_key = {**fleet.all_signers(), "targets": fleet.signers["targets"][:1]}
    fleet.publish(version="1.0.0", signers=one_key)
    with pytest.raises(UntrustedMetadata, match=r"threshold"):
        fleet.update()
    assert fleet.current() is None
    # the second key holder signs (appliance update sign): now it verifies
    assert fleet.repo.add_signature("targets", fleet.signers["targets"][1]) == 2
    assert fleet.update().version == "1.0.0"


@pytest.mark.req("REQ-UPD-003")
def test_expired_metadata_freeze_attack(fleet: Fleet) -> None:
    """Attack: freeze: a stale repository whose timestamp expired is kept in front of the box."""
    fleet.publish(version="1.0.0", now=shift(-40))  # timestamp lives 30 days: expired 10 days ago
    with pytest.raises(UntrustedMetadata, match=r"expired"):
        fleet.update()
    assert fleet.current() is None


@pytest.mark.req("REQ-UPD-004", "REQ-SAFE-500")
def test_older_metadata_replayed_rollback_attack(fleet: Fleet, tmp_path: Path) -> None:
    """Attack: rollback: an old copy of the repository (older, validly signed metadata) is replayed."""
    fleet.publish(version="1.0.0")
    old_copy = tmp_path / "old-usb"
    shutil.copytree(fleet.repo.root_dir, old_copy)
    fleet.publish(version="1.1.0")
    fleet.update()
    with pytest.raises(UntrustedMetadata):
        fleet.update(repository=str(old_copy))
    assert fleet.current() == "1.1.0"


@pytest.mark.req("REQ-UPD-004")
def test_mix_and_match_metadata(fleet: Fleet) -> None:
    """Attack: mix-and-match: the newest snapshot/timestamp combined with an older targets file."""
    fleet.publish(version="1.0.0")
    fleet.update()
    fleet.publish(version="1.1.0")
    newest = fleet.repo.latest_version("targets")
    older = (fleet.repo.metadata_dir / f"{newest - 1}.targets.json").read_bytes()
    (fleet.repo.metadata_dir / f"{newest}.targets.json").write_bytes(older)
    with pytest.raises(UntrustedMetadata):
        fleet.update()
    assert fleet.current() == "1.0.0"


@pytest.mark.req("REQ-UPD-005")
def test_downgrade_without_authorisation_refused(fleet: Fleet) -> None:
    """Attack: a validly signed but older release offered as the newest (publisher key misuse, stale stick)."""
    fleet.publish(version="1.0.0")
    fleet.publish(version="1.1.0")
    fleet.update()
    with pytest.raises(DowngradeRefused, match=r"authoris"):
        fleet.update(version="1.0.0")
    fleet.repo.publish(fleet.all_signers(), remove=["app/or-appliance-1.1.0.tar"])
    with pytest.raises(DowngradeRefused):
        fleet.update()  # the newest on offer is now 1.0.0
    assert fleet.current() == "1.1.0"


@pytest.mark.req("REQ-UPD-005", "REQ-UPD-006")
def test_downgrade_with_authorisation_audited_but_never_below_signed_floor(fleet: Fleet) -> None:
    """Fault: a field issue needs the previous release: an explicit, audited downgrade; the signed floor holds."""
    fleet.publish(version="1.0.0")
    fleet.publish(version="1.1.0")
    fleet.publish(version="1.2.0")
    fleet.update()
    result = fleet.update(version="1.1.0", authorisation="ticket 4711: 1.2.0 crashes on scanner X")
    assert (result.version, result.decision) == ("1.1.0", "authorised-downgrade")
    record = next(r for r in fleet.installer().audit.records() if r.action == "update.downgrade_authorised")  # type: ignore[union-attr]
    assert record.details["authorisation"].startswith("ticket 4711")
    assert record.details["from"] == "1.2.0"
    fleet.repo.publish(fleet.all_signers(), floors={"app": "1.1.0"})
    with pytest.raises(DowngradeRefused, match=r"signed version floor"):
        fleet.update(version="1.0.0", authorisation="any reason")
    assert fleet.current() == "1.1.0"


@pytest.mark.req("REQ-UPD-007", "REQ-UPD-003")
def test_wrong_clock_cannot_reopen_freeze(fleet: Fleet, tmp_path: Path) -> None:
    """Attack: freeze + clock reset: the repository is frozen (expired) and the box's clock is set back to when it
    was fresh, so that TUF's own expiry check would pass."""
    t0 = shift(-40)
    fleet.publish(version="1.0.0", now=t0)  # timestamp expired 10 days ago
    assert fleet.update(clock=lambda: t0 + timedelta(days=1)).version == "1.0.0"  # back then it was fresh
    with pytest.raises(UntrustedMetadata, match="expired"):
        fleet.update()  # with the right clock TUF sees the freeze
    with pytest.raises(ClockSkew, match="set the clock"):
        fleet.update(clock=lambda: t0 + timedelta(days=2))  # clock set back: refused by the guard
    # without the guard's memory (a fresh box) TUF alone would have accepted the frozen repository at that clock
    fresh = Fleet(tmp_path / "fresh-box")
    fresh.repo, fresh.trusted_root = fleet.repo, fleet.trusted_root
    assert fresh.update(clock=lambda: t0 + timedelta(days=2)).version == "1.0.0"
    assert fleet.current() == "1.0.0"
    # once the publisher signs again and the clock is right, updates flow again
    fleet.publish(version="1.1.0")
    assert fleet.update().version == "1.1.0"


@pytest.mark.req("REQ-UPD-007")
def test_clock_behind_the_signer_on_a_fresh_box(fleet: Fleet) -> None:
    """Fault: a new box whose RTC battery died boots in the past; the repository was signed 'in its future'."""
    fleet.publish(version="1.0.0")
    with pytest.raises(ClockSkew):
        fleet.update(clock=lambda: now() - timedelta(days=3))
    assert fleet.current() is None
    assert fleet.update().version == "1.0.0"


@pytest.mark.req("REQ-UPD-016")
def test_root_key_rotation(fleet: Fleet) -> None:
    """Fault: a root and targets key are retired (rotation); the box follows the signed root chain."""
    fleet.publish(version="1.0.0")
    fleet.update()
    old_root, old_targets = fleet.signers["root"], fleet.signers["targets"]
    new_root, new_targets = [CryptoSigner.generate_ed25519()], [CryptoSigner.generate_ed25519()]
    version = fleet.repo.rotate_root(
        {"root": [s.public_key for s in new_root], "targets": [s.public_key for s in new_targets]},
        old_root,
        new_root,
    )
    assert version == 2
    fleet.signers["root"], fleet.signers["targets"] = new_root, new_targets
    fleet.publish(version="1.1.0")
    assert fleet.update().version == "1.1.0"
    assert b'"version": 2' in (fleet.metadata_dir / "root.json").read_bytes()
    # the retired targets key no longer counts
    fleet.publish(version="1.2.0", signers={**fleet.all_signers(), "targets": old_targets})
    with pytest.raises(UntrustedMetadata):
        fleet.update()
    assert fleet.current() == "1.1.0"


@pytest.mark.req("REQ-UPD-016", "REQ-UPD-002")
def test_root_rotation_without_old_keys_refused(fleet: Fleet) -> None:
    """Attack: a stolen-repository root 'rotation' signed only by keys the box never trusted."""
    fleet.publish(version="1.0.0")
    fleet.update()
    rogue = [CryptoSigner.generate_ed25519()]
    fleet.repo.rotate_root({"root": [s.public_key for s in rogue]}, [], rogue)
    with pytest.raises(UntrustedMetadata):
        fleet.update()
    assert fleet.current() == "1.0.0"
