"""Query/retrieve from PACS ("Find on PACS"): the SCU side, one module per operation.

- :mod:`.association`: :class:`PacsContext` (what it needs of the service) and associations with a node.
- :mod:`.query`: C-FIND at study and series level; the nurse's criteria checked before anything is sent.
- :mod:`.move`, :mod:`.get`: C-MOVE to our AE title; C-GET on the same association for nodes preferring it.
- :mod:`.suboperations`: the progress counts of a retrieval and what its statuses mean.
- :mod:`.search`, :mod:`.retrieve`: the audited operations the API calls (retrievals run in the background).
- :mod:`.api`: the ``/api/pacs`` blueprint. :mod:`.errors`: the named errors.
"""
