"""Drivers that run the sans-I/O protocol objects over real WebSockets, with reconnection."""
