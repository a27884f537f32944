"""Fixtures of the browser tests: one Debian Chromium per test (see tests/support/browser.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page

from tests.support.browser import launch_chromium, new_page


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Debian Chromium, closed after the test."""
    async with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a fresh context: Spanish (es-419), JavaScript on, test certificates accepted."""
    async with new_page(browser) as opened:
        yield opened
