"""Render the box's nftables ruleset from appliance.toml: drop everything inbound except loopback, replies,
IPv6 neighbour discovery, DHCP replies and DICOM from the configured peers ([dicom] allowed hosts/networks).
The web UI is never opened to the network: the kiosk reaches it over loopback.

Usage: render-firewall.py CONFIG OUT   (OUT is then checked with ``nft -c -f`` and loaded with ``nft -f``)
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("render-firewall")


def render(config_path: Path | None) -> str:
    """The nftables ruleset for the configuration at ``config_path`` (None: defaults).

    Fails closed: when the configuration cannot be read, the ruleset keeps DICOM closed (loopback only) and says
    why in its first lines, so a broken file never leaves the box without a firewall.
    """
    from appliance.config import load_config

    try:
        cfg = load_config(config_path)
    except Exception as exc:  # any unreadable configuration: lock down instead of leaving the box open
        log.error("configuration unusable (%s); firewall locked down to loopback", exc)
        reason = " ".join(str(exc).split())
        return _ruleset([], [], 0, f"# LOCKED DOWN: {reason}")
    v4: list[str] = []
    v6: list[str] = []
    for peer in cfg.dicom.allowed:
        net = ipaddress.ip_network(peer.host, strict=False)
        (v4 if net.version == 4 else v6).append(str(net.network_address) if net.num_addresses == 1 else str(net))
    ui_host = ipaddress.ip_address(cfg.http.host) if cfg.http.host not in ("localhost",) else None
    if ui_host is not None and not ui_host.is_loopback:
        log.warning("[http] host %s is not loopback; the firewall keeps the UI port closed anyway", cfg.http.host)
    return _ruleset(v4, v6, int(cfg.dicom.port), f"# Generated from {config_path or 'the default configuration'}.")


def _ruleset(v4: list[str], v6: list[str], dicom_port: int, note: str) -> str:
    lines = [
        "#!/usr/sbin/nft -f",
        "# Rendered by render-firewall.py; do not edit.",
        note,
        "table inet appliance",
        "delete table inet appliance",
        "table inet appliance {",
    ]
    for name, kind, elems in (("dicom_peers_v4", "ipv4_addr", v4), ("dicom_peers_v6", "ipv6_addr", v6)):
        lines.append(f"\tset {name} {{")
        lines.append(f"\t\ttype {kind}")
        lines.append("\t\tflags interval")
        if elems:
            lines.append("\t\telements = { " + ", ".join(sorted(set(elems))) + " }")
        lines.append("\t}")
    lines += [
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        '\t\tiif "lo" accept',
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
        "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept",
        "\t\tudp sport 67 udp dport 68 accept",
    ]
    if dicom_port:
        lines += [
            f"\t\ttcp dport {dicom_port} ip saddr @dicom_peers_v4 accept",
            f"\t\ttcp dport {dicom_port} ip6 saddr @dicom_peers_v6 accept",
        ]
    lines += [
        '\t\tlimit rate 10/minute log prefix "appliance-drop: " level info',
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy drop;",
        "\t}",
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy accept;",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Write the ruleset atomically to OUT."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if len(argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    config, out = Path(argv[0]), Path(argv[1])
    text = render(config if config.exists() else None)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
