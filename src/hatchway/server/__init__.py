"""The server: AWS JSON API, agents' control channels, the data-channel gateway, bootstrap.

``app.build_server(settings)`` is the composition root: it opens the store, runs first start
(``clusterinit``: account id, built-in rows, the TLS identity; once for every replica sharing a
database) and wires the services into one aiohttp application.
"""
