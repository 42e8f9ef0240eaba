"""Errors of query/retrieve ("Find on PACS"), each naming what the nurse or the service engineer can do."""

from __future__ import annotations

from appliance.service.errors import ServiceError


class PacsError(ServiceError):
    """Base of the query/retrieve errors."""


class UnknownPacsNode(PacsError):
    """No PACS node of that name in ``[pacs] nodes``."""


class QueryRefused(PacsError):
    """The search criteria are missing or malformed (nothing was sent to the PACS)."""


class PacsUnreachable(PacsError):
    """The PACS refused the association or did not answer (address, port, AE title, TLS)."""


class PacsQueryFailed(PacsError):
    """The PACS answered a C-FIND with a failure status."""


class RetrieveFailed(PacsError):
    """A C-MOVE or C-GET ended with failed sub-operations or a failure status."""


class UnknownRetrieval(PacsError):
    """No retrieval with that id was started since the service started."""
