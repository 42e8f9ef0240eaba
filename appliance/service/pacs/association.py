"""Associations with a configured PACS node: our AE, mutual TLS, timeouts, and a refusal named for the nurse.

:class:`PacsContext` is what query/retrieve needs from the running service; :func:`open_association` is the one
place the box opens an association to a PACS for query/retrieve (the export's C-STORE has its own, in
:mod:`appliance.service.export.scu`, whose TLS client context is reused here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE

from appliance.audit import AuditLog
from appliance.config import PacsConfig, PacsNode, TlsConfig
from appliance.service.errors import DicomExportError
from appliance.service.export.scu import tls_client_context
from appliance.service.pacs.errors import PacsUnreachable, UnknownPacsNode
from appliance.service.storage import InstanceStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PacsContext:
    """What query/retrieve needs from the service.

    Attributes:
        settings: the ``[pacs]`` section (nodes, timeouts, result limit).
        ae_title: our AE title: the calling AE of every association and the C-MOVE destination.
        tls: the ``[dicom.tls]`` files used for nodes with ``tls = true`` (None: not configured).
        store: the box's instance store (C-GET writes into it, as the receiver does for C-MOVE).
        audit: the audit trail queries and retrievals are recorded in.
        study_hash: the keyed identity hash the audit trail records instead of a Study Instance UID.
    """

    settings: PacsConfig
    ae_title: str
    tls: TlsConfig | None
    store: InstanceStore
    audit: AuditLog
    study_hash: Callable[[str], str]

    def node(self, name: str) -> PacsNode:
        """The configured node called ``name``; :class:`UnknownPacsNode` naming the configured ones otherwise."""
        for node in self.settings.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.settings.nodes) or "none; add [pacs] nodes to the configuration"
        raise UnknownPacsNode(f"no PACS called {name!r} is configured (configured: {known})")


def describe(node: PacsNode) -> str:
    """``NAME (AE@host:port)`` for messages and logs."""
    return f"{node.name} ({node.ae_title}@{node.host}:{node.port})"


@contextmanager
def open_association(
    context: PacsContext,
    node: PacsNode,
    contexts: Sequence[tuple[str, Sequence[str] | None]],
    ext_neg: Sequence[Any] = (),
    handlers: Sequence[tuple[Any, Any]] = (),
) -> Iterator[Any]:
    """An established association with ``node`` (released on exit, aborted on error).

    ``contexts`` are ``(abstract syntax, transfer syntaxes or None for the default)`` pairs to request.
    """
    ae = AE(ae_title=context.ae_title)
    timeout = context.settings.query_timeout_seconds
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for abstract, syntaxes in contexts:
        if syntaxes is None:
            ae.add_requested_context(abstract)
        else:
            ae.add_requested_context(abstract, list(syntaxes))
    tls_args = None
    if node.tls:
        if context.tls is None:
            raise PacsUnreachable(f"PACS {describe(node)} needs TLS but [dicom.tls] is not configured on the box")
        try:
            tls_args = (tls_client_context(context.tls), node.host)
        except DicomExportError as exc:
            raise PacsUnreachable(str(exc)) from exc
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, tls_args=tls_args,
                         ext_neg=list(ext_neg) or None, evt_handlers=list(handlers) or None)  # fmt: skip
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "did not answer"
        raise PacsUnreachable(
            f"PACS {describe(node)} {why}; check its address and port, and that it knows our AE title "
            f"{context.ae_title!r}"
        )
    try:
        yield assoc
    except BaseException:
        assoc.abort()
        raise
    if assoc.is_established:
        assoc.release()
