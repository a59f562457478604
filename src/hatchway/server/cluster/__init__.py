"""Scale-out: several server replicas on one PostgreSQL database, routed through NATS.

Each replica serves the whole API, control channels and data channels. What they share lives in
the database (sessions, nodes, which replica relays each session and which holds each node's
control channel); what must move between them goes over NATS, authenticated per message
(``envelope``):

* ``replicas``: every replica announces itself every second; one not heard for a few seconds
  (or whose subject has no responder) is gone, and its sessions and nodes are taken over.
* ``pipes``: a data-channel end that reached a replica other than its session's relay is piped
  to the relay, which runs the gateway's logic on it as if it were local.
* ``service``: routing (which replica relays a session, which holds a node's control channel),
  take-over, the drain of a rolling restart, and the cluster's health.

The embedded default (one process, SQLite) uses none of this.
"""
