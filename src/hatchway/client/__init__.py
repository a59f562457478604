"""The client side: profiles, interactive sessions, output formatting.

Everything here is imported by the CLI on its hot path, so it keeps to the standard library
plus ``websockets``' sans-I/O layer (imported only when a session opens) — no botocore, no
cryptography, no aiohttp (``tests/client/test_websocket.py`` checks the last).
"""
