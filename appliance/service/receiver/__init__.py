"""The DICOM receiver: a lean DICOM upper-layer acceptor for C-ECHO and C-STORE, one module per concern.

- :mod:`.pdu`, :mod:`.dimse`: the PDUs and command sets an acceptor of storage reads and writes.
- :mod:`.acl`: who may associate (AE title bound to an address), a pure function.
- :mod:`.contexts`: the storage SOP classes and transfer syntaxes we accept.
- :mod:`.session`: one connection: association request within a few seconds, negotiation, DIMSE, release/abort.
- :mod:`.association`: the association limit and the association records of the audit trail.
- :mod:`.dataset`: every received dataset checked completely before it is acknowledged; its Part 10 header.
- :mod:`.store`, :mod:`.commit`: C-STORE handling and the group commit (acknowledged means on disk).
- :mod:`.server`: transport: listening socket, thread per connection, TCP_NODELAY, mutual TLS with audited
  failed handshakes.

pynetdicom's acceptor (two polling threads per association, re-encoding every dataset) capped the receiver at
about 130 instances/s on two cores with a handler that did nothing; see docs/service.md for the profile.
"""
