"""What the ends use to reach each other through the server, shared so nobody copies it:

* :mod:`~hatchway.transport.socket` — the one WebSocket interface (:class:`Socket`) every end
  of every channel programs against, with its time-outs;
* :mod:`~hatchway.transport.aiohttp_socket` — its adapter over aiohttp (the server);
* :mod:`~hatchway.transport.sansio_socket` — its adapter over websockets' sans-I/O layer (the
  CLI, which must start fast and not import aiohttp, and the agent: both send synchronously
  and take messages in from the reader callback);
* :mod:`~hatchway.transport.channel` — drives a protocol ``Endpoint`` over a socket that may be
  replaced (reconnects);
* :mod:`~hatchway.transport.backoff` — jittered exponential backoff for re-dials;
* :mod:`~hatchway.transport.apiclient` — the signed API client and the TLS context.

Neither the agent nor the client imports the other; what they share lives here.
"""
