"""Hatchway: a self-hosted session manager compatible with AWS Systems Manager Session Manager.

Operators reach managed nodes through a server that the nodes dial out to. The package is split
by concern: ``protocol`` (sans-I/O wire protocol), ``transport`` (WebSocket drivers), ``auth``,
``store``, ``server``, ``agent``, ``client`` and the ``cli`` entry point.
"""

__version__ = "0.1.0"
