"""Which event loop the processes run on.

uvloop where it is installed (a dependency on Linux and macOS): its C event loop and TLS
implementation cut the per-message cost of every hop of the relay path by a measurable share
(benchmarks/bench_echo.py), and it imports in a few milliseconds. Plain asyncio otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop (uvloop when available)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
