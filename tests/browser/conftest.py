"""Browser tests: Playwright (sync API) driving Debian's chromium, headless, against a real
`circlet serve`. One browser for the session. Select them with `-m browser`.

Without /usr/bin/chromium they are skipped with the reason, except under CI=true, where they
fail. Screenshots go to `test-artifacts/browser/` (gitignored), or $CIRCLET_TEST_ARTIFACTS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API keeps an event loop running in this
    # thread while it is open, and later tests that call asyncio.run() would then fail.
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium package to run the browser tests"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots go for a reviewer (not committed)."""
    root = Path(os.environ.get("CIRCLET_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
    target = root / "browser"
    target.mkdir(parents=True, exist_ok=True)
    return target
