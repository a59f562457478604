"""Authentication material and checks: who is calling, and can they prove it.

Owns SigV4 signing (standard library only, for the CLI) and server-side verification, including
the agents' RSA-PSS variant; agent key pairs; bearer tokens and activation codes; the master key
and encryption of secrets at rest; new access keys; and pinning the server's CA on first
contact. Authorisation (what a principal may do) belongs to ``policy``, not here.

Modules used by the CLI (``sigv4``, ``tokens``, ``pinning``, ``atomicfile``) import only the
standard library, so that ``hatchway`` commands start fast; this ``__init__`` imports nothing.
"""
