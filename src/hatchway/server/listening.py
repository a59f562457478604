"""Opening the server's listening sockets, standard library only.

``hatchway server`` binds its port first thing, before it imports and sets up the rest
(~1 s on a small machine): during a restart, clients' and agents' connection attempts then
wait in the kernel's accept queue for those moments instead of being refused, so AWS's
session-manager-plugin (which gives up after a few refused re-dials) and our own ends resume
at once. The connection guard (``server/guard.py``) accepts from these sockets.
"""

from __future__ import annotations

import errno
import socket

from hatchway.errors import Unavailable

__all__ = ["LISTEN_BACKLOG", "listen", "open_listeners"]

LISTEN_BACKLOG = 1024
"""Connections the kernel queues for ``accept``; the guard then admits or refuses them."""


def listen(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to, all on one port (``port``,
    or the one the first socket got when ``port`` is 0).

    Raises:
        OSError: an address cannot be resolved or bound (e.g. ``EADDRINUSE``).
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    try:
        for family, address in dict.fromkeys((info[0], str(info[4][0])) for info in infos):
            bound = listeners[0].getsockname()[1] if listeners else port
            sock = socket.create_server((address, bound), family=family, backlog=backlog)
            sock.setblocking(False)
            listeners.append(sock)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


def open_listeners(host: str, port: int) -> list[socket.socket]:
    """:func:`listen`, with a clear error for a busy or unusable address.

    Raises:
        Unavailable: the address cannot be bound (in use, not local, not resolvable).
    """
    try:
        return listen(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise Unavailable(
                f"cannot listen on {host}:{port}: the port is already in use"
            ) from exc
        raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
