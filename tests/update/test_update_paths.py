"""Root never runs or trusts releases below a folder another user can change (REQ-SAFE-1475).

The box once kept the root-run releases in ``/var/lib/appliance/releases``: root-owned, but inside the folder the
service user owns, so that user could rename ``releases/`` away and plant code root then ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from update_fleet import write_box_config

from appliance.cli import main
from appliance.update.errors import UnsafeInstallRoot
from appliance.update.paths import require_root_owned, writable_by_others

SERVICE_UID = 65534  # "nobody": any non-root owner stands for the service user
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")


@pytest.mark.req("REQ-SAFE-1475")
@needs_root
def test_a_folder_below_one_the_service_user_owns_is_unsafe(tmp_path: Path) -> None:
    system = tmp_path / "system" / "releases" / "app"
    system.mkdir(parents=True)
    assert writable_by_others(system, top=tmp_path) == []
    service = tmp_path / "data"
    (service / "releases" / "app").mkdir(parents=True)
    os.chown(service, SERVICE_UID, SERVICE_UID)
    problems = writable_by_others(service / "releases" / "app", top=tmp_path)
    assert problems == [f"{service} is owned by uid {SERVICE_UID}"]
    assert writable_by_others(tmp_path / "data" / "releases" / "not-yet-made", top=tmp_path) == problems


@pytest.mark.req("REQ-SAFE-1475")
def test_group_or_world_writable_folders_are_unsafe_unless_sticky(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "releases").mkdir(parents=True)
    owners = frozenset({os.geteuid()})
    shared.chmod(0o775)
    assert writable_by_others(shared / "releases", top=tmp_path, owners=owners) == [
        f"{shared} is writable by its group or everyone (drwxrwxr-x)"
    ]
    shared.chmod(0o1777)  # like /tmp: others cannot rename what they do not own
    assert writable_by_others(shared / "releases", top=tmp_path, owners=owners) == []
    link = tmp_path / "link"
    link.symlink_to(shared)
    assert writable_by_others(link, top=tmp_path, owners=frozenset({SERVICE_UID}))[1].startswith(f"{link} is owned")


@pytest.mark.req("REQ-SAFE-1475")
@needs_root
def test_update_recover_as_root_refuses_releases_in_the_service_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old box layout (releases inside the service-owned data folder) is refused by the root-run step, in one
    line that names the folder; the box layout (a root-owned system folder) is accepted."""
    cfg = write_box_config(tmp_path)
    data = tmp_path / "data"
    (data / "releases").mkdir(parents=True)
    os.chown(data, SERVICE_UID, SERVICE_UID)
    assert main(["update", "recover", "--config", str(cfg)]) == 0, "releases in tmp/system: accepted"
    capsys.readouterr()
    old_layout = ["--install-root", str(data / "releases")]
    assert main(["update", "recover", "--config", str(cfg), *old_layout]) == 1
    err = capsys.readouterr().err
    assert f"refusing to use the release folder (install_root) {data / 'releases'} as root" in err
    assert f"{data} is owned by uid {SERVICE_UID}" in err
    with pytest.raises(UnsafeInstallRoot, match="trusted update metadata"):
        require_root_owned("trusted update metadata folder", data / "update" / "metadata")
