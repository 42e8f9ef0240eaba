"""The DICOM receiver (pynetdicom), one module per protocol concern.

- :mod:`.acl`: who may associate (AE title bound to an address), a pure function.
- :mod:`.contexts`: the storage SOP classes and transfer syntaxes we accept.
- :mod:`.association`: ACSE notification handlers: allow-list and association limit (rejects), audit, counts.
- :mod:`.echo`, :mod:`.store`: the DIMSE intervention handlers (their return value is the response status).
- :mod:`.server`: transport: TCP_NODELAY, mutual TLS with failed handshakes logged and audited, start/stop.

pynetdicom's split is kept: notification handlers may be many and their errors are only logged; an intervention
handler is one per event and its return is the response, so it must never raise.
"""
