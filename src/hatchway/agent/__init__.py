"""The agent: registers a node by activation, keeps an outbound control channel, runs sessions.

Nodes never listen: every connection here is dialled out to the server.
"""
