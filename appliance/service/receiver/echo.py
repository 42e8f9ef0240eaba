"""C-ECHO (Verification) intervention handler."""

from __future__ import annotations

from typing import Any


def handle_echo(event: Any) -> int:
    """Answer success: the association was already checked against the allow-list when it was accepted."""
    return 0x0000
