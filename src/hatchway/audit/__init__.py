"""The audit trail's pure core: typed audit events with stable codes, the redaction of secrets
in request parameters, and the hash chain that makes the trail tamper-evident.

Nothing here does I/O: the store (``store.audit``) appends and reads records, the server
(``server.audit``) builds events at its edges, and the CLI verifies exports with the same
:func:`~hatchway.audit.chain.verify` the server uses.
"""
