"""Fleet updates: python-tuf verified artifacts (application, model pack, engine pack, configuration) from a USB
folder or LAN mirror, installed into versioned folders with an atomic ``current`` switch, health check and
automatic rollback. See docs/updates.md.
"""

from appliance.update.errors import (
    ClockSkew,
    DowngradeRefused,
    HealthCheckFailed,
    IncompatibleEngine,
    IncompatibleOS,
    InstallError,
    InvalidConfiguration,
    KeyMaterialError,
    RepositoryUnavailable,
    TamperedTarget,
    UntrustedMetadata,
    UpdateError,
)
from appliance.update.policy import ArtifactKind, BoxProfile, ReleaseInfo

__all__ = [
    "ArtifactKind",
    "BoxProfile",
    "ClockSkew",
    "DowngradeRefused",
    "HealthCheckFailed",
    "IncompatibleEngine",
    "IncompatibleOS",
    "InstallError",
    "InvalidConfiguration",
    "KeyMaterialError",
    "ReleaseInfo",
    "RepositoryUnavailable",
    "TamperedTarget",
    "UntrustedMetadata",
    "UpdateError",
]
