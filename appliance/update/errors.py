"""The update domain's exception hierarchy: every refusal says what happened and what to do about it."""

from __future__ import annotations

from appliance.errors import ApplianceError


class UpdateError(ApplianceError):
    """An update could not be verified, installed or rolled back; the box keeps running its current release."""


class RepositoryUnavailable(UpdateError):
    """The USB folder or LAN mirror could not be read (missing, unplugged, unreachable, truncated mid-copy)."""


class UntrustedMetadata(UpdateError):
    """TUF metadata failed verification: wrong key, too few signatures, expired, replayed or mixed versions."""


class TamperedTarget(UpdateError):
    """A downloaded artifact or one of its files does not match the signed length and hashes."""


class DowngradeRefused(UpdateError):
    """The offered release is older than the signed floor or the box's local floor."""


class ClockSkew(UpdateError):
    """The system clock is earlier than time the box has already seen; a clock reset could reopen freeze attacks."""


class IncompatibleEngine(UpdateError):
    """A TensorRT engine pack was built for another GPU architecture or TensorRT version than this box has."""


class IncompatibleOS(UpdateError):
    """The release needs a newer OS image than the box runs."""


class InvalidConfiguration(UpdateError):
    """A configuration artifact is correctly signed but its content does not validate."""


class HealthCheckFailed(UpdateError):
    """The new release did not pass its health check within the window; the previous release was restored."""


class HealthCommandFailed(UpdateError):
    """A command health check (golden reconstruction, engine smoke test) exited non-zero; one failed check."""


class InstallError(UpdateError):
    """The install could not be staged or switched (disk full, unwritable release folder, broken layout)."""


class InstallInProgress(InstallError):
    """Another process is installing an update on this box (it holds the install lock)."""


class KeyMaterialError(UpdateError):
    """A signing key or key folder is missing or unreadable."""


class UnsafeInstallRoot(UpdateError):
    """Root was asked to install, recover or trust releases below a folder another user can write or rename."""
