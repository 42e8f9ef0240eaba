"""The appliance's one configuration file (TOML), validated at load, with documented defaults.

Every section is a frozen dataclass whose fields carry a ``doc`` string in their metadata; :func:`default_toml`
writes the whole file with every key, its default and its documentation, so the documented defaults cannot
drift from the code. :func:`load_config` refuses unknown keys and wrong types with a
:class:`~appliance.errors.ConfigurationError` naming the key (``dicom.allowed[0].host``).

Tests and the CLI inject their own values through ``overrides`` (a nested mapping laid over the file).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import ConfigurationError

__all__ = [
    "AllowedPeer",
    "ApplianceConfig",
    "DicomConfig",
    "ExportConfig",
    "HttpConfig",
    "ImportConfig",
    "LoggingConfig",
    "PacsConfig",
    "PacsDestination",
    "PacsNode",
    "PrivacyConfig",
    "ReconstructionConfig",
    "StorageConfig",
    "TlsConfig",
    "UiConfig",
    "UpdateConfig",
    "config_from_mapping",
    "config_to_mapping",
    "default_toml",
    "load_config",
]

#: Where the service looks for its configuration when no ``--config`` is given.
DEFAULT_CONFIG_PATH = Path("/etc/appliance/appliance.toml")

_AE_RE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]{0,14}[\x21-\x7e])?$")


# ----------------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class AllowedPeer:
    """A DICOM peer allowed to open associations: its AE title bound to its address."""

    ae_title: str = field(metadata={"doc": "Calling AE title of the peer (case-sensitive, 1-16 characters)."})
    host: str = field(
        metadata={"doc": "IP address or network (CIDR, e.g. 10.0.0.0/24) the peer connects from."}
    )


@dataclass(frozen=True)
class TlsConfig:
    """Mutual TLS for the DICOM receiver: our certificate and key, and the CA that signs peers' certificates."""

    cert: Path = field(metadata={"doc": "PEM certificate the receiver presents."})
    key: Path = field(metadata={"doc": "PEM private key of that certificate."})
    ca: Path = field(
        metadata={"doc": "PEM CA bundle; peers must present a certificate signed by it (mutual TLS)."}
    )


@dataclass(frozen=True)
class DicomConfig:
    """The DICOM receiver (C-ECHO, C-STORE)."""

    ae_title: str = field(default="EDGE3D", metadata={"doc": "Our AE title."})
    port: int = field(default=11112, metadata={"doc": "TCP port of the receiver; 0 disables it."})
    bind_address: str = field(default="0.0.0.0", metadata={"doc": "Address the receiver listens on."})
    allowed: list[AllowedPeer] = field(
        default_factory=list,
        metadata={
            "doc": "Peers allowed to send: each AE title bound to its address. Empty: every association is refused."
        },
    )
    study_stable_seconds: float = field(
        default=30.0,
        metadata={"doc": "Quiet time (s) after the last instance before a study counts as complete."},
    )
    max_associations: int = field(
        default=8, metadata={"doc": "Most concurrent associations; more are rejected."}
    )
    network_timeout_seconds: float = field(
        default=60.0, metadata={"doc": "Idle time (s) before an association is aborted."}
    )
    max_pdu_bytes: int = field(default=0, metadata={"doc": "Largest PDU we accept (0 = unlimited)."})
    quota_bytes: int = field(
        default=0,
        metadata={
            "doc": "Most bytes of received studies kept on the box; when reached, C-STORE answers 0xA700 and an alarm "
            "is raised. Stored studies are never deleted to make room. 0 = limited only by min_free_bytes."
        },
    )
    min_free_bytes: int = field(
        default=2_000_000_000,
        metadata={
            "doc": "Free disk space kept in reserve on the data partition; below it C-STORE answers 0xA700."
        },
    )
    tls: TlsConfig | None = field(default=None, metadata={"doc": "Mutual TLS settings; absent = plain TCP."})


@dataclass(frozen=True)
class ReconstructionConfig:
    """Automatic reconstruction of complete studies."""

    auto: bool = field(default=True, metadata={"doc": "Reconstruct complete studies without a tap."})
    preset: str = field(
        default="auto", metadata={"doc": "Preset name, or 'auto' to choose it from the series."}
    )
    device: str = field(default="auto", metadata={"doc": "'auto', 'cpu' or 'cuda'."})
    formats: list[str] = field(
        default_factory=lambda: ["stl", "3mf", "glb"],
        metadata={"doc": "Mesh formats written for every structure."},
    )
    workers: int = field(default=1, metadata={"doc": "Reconstruction jobs run at the same time."})
    max_slice_spacing_mm: float = field(
        default=1.5, metadata={"doc": "Slice spacing above this is flagged as too coarse for surgical planning."}
    )
    max_slice_thickness_mm: float = field(
        default=2.0, metadata={"doc": "Slice thickness above this is flagged as too coarse for surgical planning."}
    )


@dataclass(frozen=True)
class StorageConfig:
    """Where the box keeps its data and for how long."""

    data_dir: Path = field(
        default=Path("/var/lib/appliance"),
        metadata={"doc": "The service's data folder (on the box: the data partition's data/): studies, jobs, outputs."},
    )
    retention_days: int = field(
        default=30,
        metadata={
            "doc": "Studies and outputs older than this many days are purged (audited); 0 keeps them forever."
        },
    )


@dataclass(frozen=True)
class ImportConfig:
    """USB / folder import."""

    watch_dir: Path | None = field(
        default=None, metadata={"doc": "Folder (mount point) watched for media; absent = no import watcher."}
    )
    poll_seconds: float = field(
        default=2.0, metadata={"doc": "How often the folder is checked for a new medium."}
    )
    max_file_bytes: int = field(
        default=2_000_000_000, metadata={"doc": "Files larger than this are skipped with a reason."}
    )


@dataclass(frozen=True)
class PrivacyConfig:
    """De-identification (DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile)."""

    profile: str = field(default="basic", metadata={"doc": "Confidentiality profile; only 'basic' exists."})
    retain_longitudinal_temporal_modified_dates: bool = field(
        default=True,
        metadata={
            "doc": "Option 'Retain Longitudinal Temporal Information with Modified Dates': dates shifted per patient."
        },
    )
    clean_descriptors: bool = field(
        default=True,
        metadata={
            "doc": "Option 'Clean Descriptors': free-text descriptions kept only when cleaned; otherwise removed."
        },
    )
    retain_uids: bool = field(
        default=False, metadata={"doc": "Option 'Retain UIDs' (false: UIDs are remapped consistently)."}
    )
    deidentify_on_ingest: bool = field(
        default=False, metadata={"doc": "Also de-identify the copies stored on the box."}
    )
    secret_file: Path | None = field(
        default=None,
        metadata={
            "doc": "File holding the box secret for UID remapping and date shifts; absent = <data_dir>/secret.key."
        },
    )


@dataclass(frozen=True)
class PacsDestination:
    """A DICOM node results may be sent to."""

    name: str = field(metadata={"doc": "Name shown on the screen."})
    ae_title: str = field(metadata={"doc": "Called AE title of the destination."})
    host: str = field(metadata={"doc": "Host name or IP address."})
    port: int = field(default=104, metadata={"doc": "TCP port."})
    tls: bool = field(default=False, metadata={"doc": "Use TLS with the receiver's certificate settings."})


@dataclass(frozen=True)
class ExportConfig:
    """Export of results to PACS."""

    destinations: list[PacsDestination] = field(
        default_factory=list, metadata={"doc": "PACS nodes results may be sent to."}
    )
    auto_destination: str = field(
        default="", metadata={"doc": "Name of a destination sent to after every reconstruction; '' = none."}
    )
    manufacturer: str = field(
        default="OR Appliance Project", metadata={"doc": "Manufacturer written into exported DICOM objects."}
    )
    model_name: str = field(
        default="EDGE3D", metadata={"doc": "Manufacturer's Model Name written into exported DICOM objects."}
    )


@dataclass(frozen=True)
class PacsNode:
    """A PACS the nurse may query ("Find on PACS") and retrieve studies from."""

    name: str = field(metadata={"doc": "Name shown on the screen and used in the API (/api/pacs/<name>/...)."})
    ae_title: str = field(metadata={"doc": "Called AE title of the PACS."})
    host: str = field(metadata={"doc": "Host name or IP address."})
    port: int = field(default=104, metadata={"doc": "TCP port."})
    tls: bool = field(default=False, metadata={"doc": "Use mutual TLS with the [dicom.tls] certificate settings."})
    retrieve: str = field(
        default="move",
        metadata={
            "doc": "'move': C-MOVE to our AE title (the PACS must know the box as a modality, and dicom.allowed must "
            "list the PACS); 'get': C-GET on the query's own association (for peers that prefer it)."
        },
    )


@dataclass(frozen=True)
class PacsConfig:
    """Query/retrieve ("Find on PACS"): the PACS nodes studies are fetched from (C-FIND, C-MOVE / C-GET)."""

    nodes: list[PacsNode] = field(
        default_factory=list, metadata={"doc": "PACS nodes to query and retrieve from; empty = no Find on PACS."}
    )
    query_timeout_seconds: float = field(
        default=30.0, metadata={"doc": "Longest wait (s) for a PACS to answer a query or an association."}
    )
    retrieve_timeout_seconds: float = field(
        default=1800.0, metadata={"doc": "Longest a retrieval may run (s) before it is cancelled."}
    )
    max_results: int = field(
        default=200, metadata={"doc": "Most studies one query returns; the PACS is asked to stop after them."}
    )


@dataclass(frozen=True)
class HttpConfig:
    """The web app and JSON API."""

    host: str = field(
        default="127.0.0.1", metadata={"doc": "Address the web app listens on (the kiosk browser is local)."}
    )
    port: int = field(default=8080, metadata={"doc": "TCP port of the web app."})


@dataclass(frozen=True)
class UiConfig:
    """The touchscreen UI (read by ui/)."""

    pins: dict[str, str] = field(
        default_factory=lambda: {"nurse": "", "surgeon": "", "service": ""},
        metadata={"doc": "PIN hashes per role (nurse, surgeon, service); '' = role disabled."},
    )
    idle_lock_seconds: int = field(
        default=300, metadata={"doc": "Idle time before the screen locks and hides patient data."}
    )
    lockout_attempts: int = field(
        default=5, metadata={"doc": "Wrong PINs in a row before the role is locked out."}
    )
    lockout_seconds: int = field(default=300, metadata={"doc": "How long a lockout lasts."})
    language: str = field(default="en", metadata={"doc": "Default language: 'en' or 'zh-CN'."})
    options: dict[str, str] = field(
        default_factory=dict, metadata={"doc": "Further UI settings as strings (read by ui/)."}
    )


@dataclass(frozen=True)
class UpdateConfig:
    """Fleet updates (read by appliance/update)."""

    repository: str = field(
        default="",
        metadata={"doc": "Update repository: a folder (USB) or an http(s) URL on the LAN; '' = none."},
    )
    trusted_metadata_dir: Path = field(
        default=Path("/var/lib/appliance-system/update/metadata"),
        metadata={"doc": "Folder holding the client's trusted TUF metadata (root-owned, outside data_dir)."},
    )
    options: dict[str, str] = field(
        default_factory=dict,
        metadata={"doc": "Further update settings as strings (read by appliance/update)."},
    )


@dataclass(frozen=True)
class LoggingConfig:
    """Logs: to stderr and a rotating file in the data folder."""

    level: str = field(default="INFO", metadata={"doc": "DEBUG, INFO, WARNING or ERROR."})
    file_max_bytes: int = field(
        default=10_000_000, metadata={"doc": "Size of one log file before it rotates."}
    )
    file_backups: int = field(default=5, metadata={"doc": "Rotated log files kept."})


@dataclass(frozen=True)
class ApplianceConfig:
    """The whole configuration."""

    dicom: DicomConfig = field(default_factory=DicomConfig)
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    import_: ImportConfig = field(default_factory=ImportConfig, metadata={"key": "import"})
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    pacs: PacsConfig = field(default_factory=PacsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def data_dir(self) -> Path:
        """Shortcut for ``storage.data_dir``."""
        return self.storage.data_dir


# ----------------------------------------------------------------------------------------------- conversion
def _key(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key", f.name))


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        inner = typing.get_args(tp)[0]
        return (
            "a list of tables" if dataclasses.is_dataclass(inner) else f"a list of {_type_name(inner)[2:]}s"
        )
    if origin is dict:
        return "a table of strings"
    if dataclasses.is_dataclass(tp):
        return "a table"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
    return names.get(tp, str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"{key}: expected a table, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigurationError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__}")
        (inner,) = typing.get_args(tp)
        return [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"{key}: expected a table of strings, got {type(value).__name__}")
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str):
                raise ConfigurationError(f"{key}.{k}: expected a string, got {type(v).__name__}")
            out[str(k)] = v
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigurationError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigurationError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path) or not str(value):
            raise ConfigurationError(f"{key}: expected a path (string), got {value!r}")
        return Path(value)
    raise ConfigurationError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - programming error


def _build(cls: type[Any], data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {_key(f): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigurationError(
            f"unknown configuration key '{where}'; known keys here: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for k, f in fields.items():
        path = f"{prefix}.{k}" if prefix else k
        if k in data:
            kwargs[f.name] = _convert(data[k], hints[f.name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigurationError(f"configuration key '{path}' is required")
    return cls(**kwargs)


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _check_values(cfg: ApplianceConfig) -> None:
    """Checks beyond types: ranges, AE titles, addresses, enumerations."""
    d = cfg.dicom
    for key, ae in [("dicom.ae_title", d.ae_title)] + [
        (f"dicom.allowed[{i}].ae_title", p.ae_title) for i, p in enumerate(d.allowed)
    ]:
        if not _AE_RE.match(ae) or "\\" in ae:
            raise ConfigurationError(
                f"{key}: {ae!r} is not a valid AE title (1-16 printable characters, no \\)"
            )
    for i, p in enumerate(d.allowed):
        try:
            ipaddress.ip_network(p.host, strict=False)
        except ValueError as exc:
            raise ConfigurationError(
                f"dicom.allowed[{i}].host: {p.host!r} is not an IP address or network"
            ) from exc
    for key, port in (("dicom.port", d.port), ("http.port", cfg.http.port)):
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"{key}: {port} is not a TCP port (0-65535)")
    for i, dest in enumerate(cfg.export.destinations):
        if not 1 <= dest.port <= 65535:
            raise ConfigurationError(f"export.destinations[{i}].port: {dest.port} is not a TCP port")
    positive = {
        "dicom.max_associations": d.max_associations,
        "reconstruction.workers": cfg.reconstruction.workers,
        "import.max_file_bytes": cfg.import_.max_file_bytes,
    }
    for key, val in positive.items():
        if val < 1:
            raise ConfigurationError(f"{key}: must be at least 1, got {val}")
    non_negative = {
        "dicom.study_stable_seconds": d.study_stable_seconds,
        "dicom.quota_bytes": d.quota_bytes,
        "dicom.min_free_bytes": d.min_free_bytes,
        "dicom.max_pdu_bytes": d.max_pdu_bytes,
        "storage.retention_days": cfg.storage.retention_days,
        "ui.idle_lock_seconds": cfg.ui.idle_lock_seconds,
        "ui.lockout_attempts": cfg.ui.lockout_attempts,
    }
    for key, num in non_negative.items():
        if num < 0:
            raise ConfigurationError(f"{key}: must not be negative, got {num}")
    if cfg.reconstruction.device not in ("auto", "cpu", "cuda"):
        raise ConfigurationError(
            f"reconstruction.device: {cfg.reconstruction.device!r} must be auto, cpu or cuda"
        )
    if cfg.privacy.profile != "basic":
        raise ConfigurationError(f"privacy.profile: {cfg.privacy.profile!r}; only 'basic' is implemented")
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigurationError(
            f"logging.level: {cfg.logging.level!r} must be DEBUG, INFO, WARNING or ERROR"
        )
    _check_pacs(cfg)
    names = [dst.name for dst in cfg.export.destinations]
    if cfg.export.auto_destination and cfg.export.auto_destination not in names:
        raise ConfigurationError(
            f"export.auto_destination: {cfg.export.auto_destination!r} is not one of export.destinations {names}"
        )


def _check_pacs(cfg: ApplianceConfig) -> None:
    """``[pacs]``: valid and unique nodes; a C-MOVE node must be allowed to send the study back to us."""
    p = cfg.pacs
    seen: set[str] = set()
    for i, node in enumerate(p.nodes):
        key = f"pacs.nodes[{i}]"
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", node.name):
            raise ConfigurationError(f"{key}.name: {node.name!r} must be 1-64 letters, digits, '_', '.' or '-'")
        if node.name in seen:
            raise ConfigurationError(f"{key}.name: {node.name!r} is used by another PACS node")
        seen.add(node.name)
        if not _AE_RE.match(node.ae_title) or "\\" in node.ae_title:
            raise ConfigurationError(f"{key}.ae_title: {node.ae_title!r} is not a valid AE title")
        if not 1 <= node.port <= 65535:
            raise ConfigurationError(f"{key}.port: {node.port} is not a TCP port")
        if node.retrieve not in ("move", "get"):
            raise ConfigurationError(f"{key}.retrieve: {node.retrieve!r} must be 'move' or 'get'")
        if node.retrieve == "move" and cfg.dicom.port == 0:
            raise ConfigurationError(
                f"{key}: C-MOVE delivers the study to our receiver, which dicom.port = 0 disables; enable the "
                "receiver or set retrieve = 'get'"
            )
        if node.retrieve == "move" and node.ae_title not in {a.ae_title for a in cfg.dicom.allowed}:
            raise ConfigurationError(
                f"{key}: C-MOVE makes {node.ae_title!r} send the study to our receiver, but dicom.allowed does not "
                f"list it; add {{ae_title = {node.ae_title!r}, host = ...}} to dicom.allowed or set retrieve = 'get'"
            )
    for key, val in (("pacs.query_timeout_seconds", p.query_timeout_seconds),
                     ("pacs.retrieve_timeout_seconds", p.retrieve_timeout_seconds),
                     ("pacs.max_results", p.max_results)):  # fmt: skip
        if val <= 0:
            raise ConfigurationError(f"{key}: must be positive, got {val}")


def config_from_mapping(data: Mapping[str, Any]) -> ApplianceConfig:
    """Validate a nested mapping (as parsed from TOML) into an :class:`ApplianceConfig`."""
    cfg: ApplianceConfig = _build(ApplianceConfig, data, "")
    _check_values(cfg)
    return cfg


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> ApplianceConfig:
    """Read and validate the TOML file at ``path`` (None: defaults only), with ``overrides`` laid over it."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigurationError(f"configuration file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"configuration file {path} is not valid TOML: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"configuration file {path} cannot be read: {exc}") from exc
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return config_from_mapping(data)
    except ConfigurationError as exc:
        where = f" in {path}" if path is not None else ""
        raise ConfigurationError(f"{exc}{where}") from exc


def config_to_mapping(cfg: Any) -> dict[str, Any]:
    """The configuration as a nested, TOML/JSON-ready mapping (paths as strings, None omitted)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        out_val = _plain(getattr(cfg, f.name))
        if out_val is not None:
            out[_key(f)] = out_val
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_mapping(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


# ----------------------------------------------------------------------------------------------- documentation
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if not isinstance(value, int) else f"{value}"
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigurationError(f"cannot write {value!r} as TOML")  # pragma: no cover


_EXAMPLES: dict[str, str] = {
    "dicom.allowed": 'allowed = [{ae_title = "SCANNER1", host = "10.0.0.5"}]',
    "dicom.tls": '[dicom.tls]\n# cert = "/etc/appliance/tls/box.pem"\n# key = "/etc/appliance/tls/box.key"\n'
    '# ca = "/etc/appliance/tls/hospital-ca.pem"',
    "export.destinations": 'destinations = [{name = "PACS", ae_title = "PACS", host = "10.0.0.9", port = 104}]',
    "pacs.nodes": 'nodes = [{name = "PACS", ae_title = "PACS", host = "10.0.0.9", port = 104, tls = false}]',
    "import.watch_dir": 'watch_dir = "/media/usb"',
    "privacy.secret_file": 'secret_file = "/var/lib/appliance/secret.key"',
}


def _section_lines(cls: type[Any], instance: Any, name: str) -> list[str]:
    lines = [f"# {(cls.__doc__ or '').strip()}", f"[{name}]"]
    nested: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = _key(f)
        doc = str(f.metadata.get("doc", ""))
        value = getattr(instance, f.name)
        example = _EXAMPLES.get(f"{name}.{key}")
        tp = hints[f.name]
        if value is None and typing.get_origin(tp) in (typing.Union, types.UnionType):
            inner = next(a for a in typing.get_args(tp) if a is not type(None))
            if dataclasses.is_dataclass(inner):
                nested += [
                    "",
                    f"# {doc} Keys: "
                    + "; ".join(f"{_key(g)}: {g.metadata.get('doc', '')}" for g in dataclasses.fields(inner)),
                ]
                nested += [f"# {ln}" if not ln.startswith("#") else ln for ln in (example or "").splitlines()]
                continue
            lines += [f"# {doc} ({_type_name(inner)}; not set by default)", f"# {example or key + ' = ...'}"]
            continue
        lines.append(f"# {doc} ({_type_name(tp)})")
        if isinstance(value, list) and value == [] and example:
            inner = typing.get_args(tp)[0]
            if dataclasses.is_dataclass(inner):
                lines.append(
                    "#   each: "
                    + "; ".join(
                        f"{_key(g)} ({_type_name(hints_g)}): {g.metadata.get('doc', '')}"
                        for g, hints_g in zip(
                            dataclasses.fields(inner), typing.get_type_hints(inner).values(), strict=True
                        )
                    )
                )
            lines.append(f"# example: {example}")
        lines.append(f"{key} = {_toml_value(_plain(value))}")
    return lines + nested


def default_toml() -> str:
    """The default configuration file: every key with its default value and its documentation.

    ``tomllib.loads(default_toml())`` validates to the defaults, so the file the image ships is exactly what the
    code assumes when no file is given.
    """
    defaults = ApplianceConfig()
    out = [
        "# OR appliance configuration (TOML). Every key is optional; shown values are the defaults.",
        "# Unknown keys or wrong types are refused at start with a message naming the key.",
    ]
    for f in dataclasses.fields(ApplianceConfig):
        out.append("")
        out += _section_lines(
            typing.get_type_hints(ApplianceConfig)[f.name], getattr(defaults, f.name), _key(f)
        )
    return "\n".join(out) + "\n"
