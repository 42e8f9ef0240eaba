from update_fleet import Fleet, fleet  # noqa: F401


def test_smoke(fleet: Fleet) -> None:
    fleet.publish(version="1.0.0")
    r = fleet.update()
    assert r.version == "1.0.0"
    assert fleet.current() == "1.0.0"
    fleet.publish(version="1.1.0")
    r = fleet.update()
    assert (r.version, r.previous) == ("1.1.0", "1.0.0")
    print(fleet.audit_actions())
