"""Debian's chromium through Playwright, for the console's end-to-end tests.

No browser is downloaded: the tests launch ``/usr/bin/chromium`` (``apt-get install
chromium``). Without it (or without playwright) they skip with the reason, unless
``HATCHWAY_TEST_BROWSER=require`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("HATCHWAY_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("HATCHWAY_TEST_ARTIFACTS", "test-artifacts")) / "console"


def require_chromium() -> None:
    """Skip (with the reason) where chromium or playwright is missing; CI installs both."""
    problem = ""
    if not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} is missing: apt-get install chromium"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed: pip install playwright"
    if problem:
        if os.environ.get("HATCHWAY_TEST_BROWSER") == "require":
            raise AssertionError(f"{problem} (HATCHWAY_TEST_BROWSER=require)")
        pytest.skip(problem)


def screenshot(page: object, name: str) -> None:
    """Save the page as a test artefact (``test-artifacts/console/NAME.png``)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))  # type: ignore[attr-defined]
