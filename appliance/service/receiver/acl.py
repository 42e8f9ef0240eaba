"""Who may open an association: an AE title bound to an address or network."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from appliance.config import AllowedPeer


def peer_allowed(allowed: Sequence[AllowedPeer], calling_ae: str, address: str) -> bool:
    """True when ``calling_ae`` connecting from ``address`` is on the allow-list (exact AE title match)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for peer in allowed:
        if peer.ae_title != calling_ae.strip():
            continue
        if ip in ipaddress.ip_network(peer.host, strict=False):
            return True
    return False
