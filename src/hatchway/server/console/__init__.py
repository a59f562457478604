"""The web console (issue 9): sign-in with cookie sessions (``logins``), its JSON API under
``/api/`` (``api``, described by ``openapi``), and the terminal bridge between a browser's
WebSocket and a session's data channel (``bridge``, over ``pipe``). Every action runs as the
signed-in user through the same operations and policy checks as the SigV4 API."""
