"""The pinned edition of the PS3.15 Basic Application Level Confidentiality Profile attribute table.

The table ships as ``data/basic_profile_<edition>.tsv`` (655 attributes for 2026c) and is bumped deliberately:
a new edition is a new file and a change of :data:`PROFILE_EDITION`, followed by the canary test.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from appliance.privacy.errors import ProfileError

#: The edition of DICOM PS3.15 whose Table E.1-1 is applied.
PROFILE_EDITION = "2026c"


@dataclass(frozen=True)
class ProfileRule:
    """One row of Table E.1-1: the attribute (or repeating-group pattern) and its Basic Profile action."""

    tag: int
    mask: int
    keyword: str
    name: str
    vr: str
    action: str

    def matches(self, tag: int) -> bool:
        """True when ``tag`` is this attribute (or in this repeating group)."""
        return (tag & self.mask) == self.tag


@dataclass(frozen=True)
class Profile:
    """The attribute table: exact tags by value, repeating-group patterns apart."""

    edition: str
    rules: tuple[ProfileRule, ...]

    def rule_for(self, tag: int) -> ProfileRule | None:
        """The rule applying to ``tag``, or None (the attribute is kept)."""
        exact = _exact(self)
        rule = exact.get(tag)
        if rule is not None:
            return rule
        for r in self.rules:
            if r.mask != 0xFFFFFFFF and r.matches(tag):
                return r
        return None


@lru_cache(maxsize=4)
def _exact(profile: Profile) -> dict[int, ProfileRule]:
    return {r.tag: r for r in profile.rules if r.mask == 0xFFFFFFFF}


VALID_ACTIONS = frozenset({"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})


@lru_cache(maxsize=4)
def load_profile(edition: str = PROFILE_EDITION) -> Profile:
    """Read the shipped table of ``edition``."""
    name = f"basic_profile_{edition}.tsv"
    try:
        text = resources.files("appliance.privacy").joinpath("data", name).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise ProfileError(f"the de-identification table {name} is missing; reinstall the appliance") from exc
    rules = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#") or line.startswith("tag\t"):
            continue
        parts = line.split("\t")
        if len(parts) != 6 or parts[5] not in VALID_ACTIONS:
            raise ProfileError(f"{name} line {n} is malformed: {line[:80]!r}")
        rules.append(
            ProfileRule(int(parts[0], 16), int(parts[1], 16), parts[2], parts[3], parts[4], parts[5])
        )
    return Profile(edition, tuple(rules))
