"""What both ends use to reach the server: drivers that run the sans-I/O protocol objects over
WebSockets (with reconnection and backoff), the signed API client and the TLS context.

Neither the agent nor the client imports the other; what they share lives here.
"""
