"""The server: AWS JSON API, agents' control channels, the data-channel gateway, bootstrap.

``app.build_server(settings)`` is the composition root: it opens the store, creates the TLS
identity and wires the services into one aiohttp application.
"""
