"""Browser tests: a real ``flowscope run`` (free ports, a temporary state directory) and Debian's
chromium, headless, driven by Playwright for Python.

Chromium is never downloaded by Playwright: ``.ci/run`` installs Debian's package and the tests
launch ``/usr/bin/chromium``. A missing browser or Playwright fails the tests with a clear message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, Flowscope, Tab


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does it)")
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install -e '.[test]' (never `playwright install`)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def open_tab(browser: Any) -> Iterator[Callable[..., Tab]]:
    """Opens pages in fresh browser contexts (no shared cookies); closes them after the test."""
    contexts: list[Any] = []

    def open_(url: str | None = None) -> Tab:
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        page = context.new_page()
        tab = Tab(page)
        page.on("console", lambda message: tab.errors.append(f"console {message.type}: {message.text}")
                if message.type == "error" else None)
        page.on("pageerror", lambda error: tab.errors.append(f"uncaught: {error}"))
        if url is not None:
            tab.goto(url)
        return tab

    yield open_
    for context in contexts:
        with contextlib.suppress(Exception):  # a context whose browser already went away
            context.close()


@pytest.fixture
def flowscope_run(tmp_path: Path) -> Iterator[Callable[..., Flowscope]]:
    """Starts ``flowscope run`` processes (stopped after the test)."""
    runs: list[Flowscope] = []

    def start_(toml: str = "", settings: tuple[str, ...] = (), token: str = "") -> Flowscope:
        run = Flowscope(tmp_path / f"run{len(runs)}", toml, settings, token)
        runs.append(run)
        return run

    yield start_
    for run in runs:
        run.stop()
