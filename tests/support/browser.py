"""Browser tests: Debian's Chromium driven by Playwright, with axe-core accessibility checks.

Chromium is the one Debian ships (``/usr/bin/chromium``, installed by
``scripts/ensure-chromium``; ``PUENTE_CHROMIUM`` names another): Playwright
cannot download its own browser here, so it launches this one by path.

Playwright's *async* API, because pytest-asyncio runs in auto mode and the pages
under test are served by an aiohttp app in the test's own event loop: the sync
API refuses to start inside a running loop, and would block the loop that has to
answer the browser. Each test gets its own browser (the ``browser`` and ``page``
fixtures of tests/browser/conftest.py), so nothing crosses event loops; driver,
launch and a first page cost about a second a test.

    async def test_arrivals(browser: Browser, tmp_path: Path) -> None:
        async with serve_https(app) as base_url, new_page(browser) as page:
            await page.goto(f"{base_url}/llegadas")
            await check_accessibility(page)
            await save_screenshot(page, tmp_path / "llegadas.png")

axe-core comes from the ``axe-playwright-python`` wheel on PyPI, which ships
``axe.min.js``: it installs with the other dev dependencies (``make venv``), no
Node.js needed. Only the script is used; running it and reading its results is
done here.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import os
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

CHROMIUM_ENV = "PUENTE_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"

# We run as root, so no sandbox; without the background-networking flags
# Chromium keeps trying to reach Google's services, which the closed network
# refuses, slowly and many at a time.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Spanish first, as spoken in Latin America (BCP 47 "es-419"): navigator.language
# and the Accept-Language header the node's locale negotiation will read.
DEFAULT_LOCALE = "es-419"
# A shared reception-centre desktop; tests of the tablet layout pass their own.
DEFAULT_VIEWPORT = {"width": 1280, "height": 800}
# Fail a missing element in seconds, not Playwright's default 30.
DEFAULT_TIMEOUT_MS = 10_000

# WCAG 2.2 level AA, as axe-core tags its rules (a rule carries the tag of the
# WCAG version that introduced its success criterion, so all five are needed).
WCAG_22_AA_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
BLOCKING_IMPACTS = frozenset({"serious", "critical"})
AXE_TIMEOUT_S = 30.0

# Contexts made with JavaScript off: axe cannot run there (Playwright's evaluate
# never returns), so check_accessibility refuses them at once.
_NO_SCRIPT_CONTEXTS: weakref.WeakSet[BrowserContext] = weakref.WeakSet()


def chromium_executable() -> str:
    """The Chromium to launch, or a test failure that says how to install it."""
    path = os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no Chromium at {path}: run `bash scripts/ensure-chromium` (as root it installs "
            f"Debian's chromium), or set {CHROMIUM_ENV} to a Chromium executable",
            pytrace=False,
        )
    return path


@asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    """Start Playwright's driver and a headless Debian Chromium; stop both on exit.

    Playwright gives every launch a fresh, empty profile of its own.
    """
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_executable(), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def new_page(
    browser: Browser,
    *,
    locale: str = DEFAULT_LOCALE,
    javascript: bool = True,
    viewport: Mapping[str, int] = DEFAULT_VIEWPORT,
) -> AsyncIterator[Page]:
    """A page in a new, isolated browser context (its own cookies and storage).

    The context accepts the test servers' self-signed certificates. Pass
    ``javascript=False`` to show that a page works without scripts, as every
    page of the web interface must.
    """
    context = await browser.new_context(
        ignore_https_errors=True,
        locale=locale,
        java_script_enabled=javascript,
        viewport={"width": viewport["width"], "height": viewport["height"]},
        service_workers="block",
    )
    if not javascript:
        _NO_SCRIPT_CONTEXTS.add(context)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def save_screenshot(page: Page, path: Path) -> Path:
    """A PNG of the whole page, not only the viewport, at ``path`` (folders made as needed).

    Write screenshots under ``tmp_path`` or another git-ignored folder, never into git.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=path, full_page=True, animations="disabled", type="png")
    return path


@functools.cache
def axe_script() -> str:
    """axe-core's ``axe.min.js`` as shipped in the axe-playwright-python wheel."""
    resource = importlib.resources.files("axe_playwright_python").joinpath("axe.min.js")
    return resource.read_text(encoding="utf-8")


@dataclass(frozen=True)
class AxeNode:
    """One element that breaks an axe rule."""

    target: str
    html: str
    failure_summary: str


@dataclass(frozen=True)
class AxeViolation:
    """One axe rule broken on the page, with every element that breaks it."""

    rule: str
    impact: str
    help: str
    help_url: str
    tags: tuple[str, ...]
    nodes: tuple[AxeNode, ...]

    @classmethod
    def from_axe(cls, raw: Mapping[str, Any]) -> AxeViolation:
        return cls(
            rule=str(raw["id"]),
            impact=str(raw.get("impact") or "unknown"),
            help=str(raw.get("help", "")),
            help_url=str(raw.get("helpUrl", "")),
            tags=tuple(str(tag) for tag in raw.get("tags", ())),
            nodes=tuple(
                AxeNode(
                    target=" ".join(_flatten_target(node.get("target", ()))),
                    html=str(node.get("html", "")),
                    failure_summary=str(node.get("failureSummary") or ""),
                )
                for node in raw.get("nodes", ())
            ),
        )

    def describe(self) -> str:
        """A few readable lines: the rule, its impact, where, and how to fix it."""
        lines = [f"{self.rule} [{self.impact}] {self.help} ({self.help_url})"]
        for node in self.nodes:
            lines.append(f"    at {node.target}: {_shorten(node.html)}")
            lines.extend(
                f"        {line.strip()}" for line in node.failure_summary.splitlines() if line
            )
        return "\n".join(lines)


class AccessibilityError(AssertionError):
    """axe-core found violations that block: the page is not WCAG 2.2 AA."""

    def __init__(self, url: str, axe_version: str, violations: Sequence[AxeViolation]) -> None:
        self.url = url
        self.violations = tuple(violations)
        listing = "\n".join(
            f"{number}. {violation.describe()}"
            for number, violation in enumerate(self.violations, start=1)
        )
        super().__init__(
            f"axe-core {axe_version}: {len(self.violations)} serious or critical WCAG 2.2 AA "
            f"violation(s) on {url}:\n{listing}"
        )


@dataclass(frozen=True)
class AxeReport:
    """What an accessibility check found that did not block."""

    axe_version: str
    minor: tuple[AxeViolation, ...]
    incomplete: tuple[str, ...]  # rules axe could not decide: worth a person's look


async def check_accessibility(
    page: Page,
    *,
    tags: Iterable[str] = WCAG_22_AA_TAGS,
    blocking: frozenset[str] = BLOCKING_IMPACTS,
    exclude: Sequence[str] = (),
) -> AxeReport:
    """Run axe-core on the page as it is now; raise AccessibilityError on blocking violations.

    Blocking means an impact of ``serious`` or ``critical`` on a rule tagged for
    WCAG 2.2 AA. Violations of lower impact come back in the report. ``exclude``
    takes CSS selectors of parts that are not ours to fix. axe is evaluated
    through the DevTools protocol, so a strict Content-Security-Policy on the
    page does not stop it; JavaScript must be on in the page's context.
    """
    if page.context in _NO_SCRIPT_CONTEXTS:
        raise RuntimeError(
            "axe-core needs JavaScript: check accessibility in a page opened with "
            "javascript=True (the default), and test the no-script behaviour in another"
        )
    options = {
        "runOnly": {"type": "tag", "values": list(tags)},
        "resultTypes": ["violations", "incomplete"],
    }
    # axe's context: the whole document, less the excluded parts.
    context = {"exclude": [[selector] for selector in exclude]} if exclude else None
    async with asyncio.timeout(AXE_TIMEOUT_S):
        if not await page.evaluate("() => typeof window.axe === 'object'"):
            await page.evaluate(axe_script())
        version = str(await page.evaluate("() => axe.version"))
        results: dict[str, Any] = await page.evaluate(
            "([context, options]) => axe.run(context ?? document, options)",
            [context, options],
        )
    violations = [AxeViolation.from_axe(raw) for raw in results["violations"]]
    blocking_found = [violation for violation in violations if violation.impact in blocking]
    if blocking_found:
        raise AccessibilityError(page.url, version, blocking_found)
    return AxeReport(
        axe_version=version,
        minor=tuple(violation for violation in violations if violation.impact not in blocking),
        incomplete=tuple(str(raw["id"]) for raw in results.get("incomplete", ())),
    )


async def axe_rules(page: Page, tags: Iterable[str]) -> list[str]:
    """The ids of the axe-core rules that carry any of ``tags`` (axe injected if needed)."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(axe_script())
    rules: list[dict[str, Any]] = await page.evaluate("(tags) => axe.getRules(tags)", list(tags))
    return sorted(str(rule["ruleId"]) for rule in rules)


def _flatten_target(target: Iterable[Any]) -> list[str]:
    # axe gives a list of selectors; an element inside a shadow root or frame is a list itself.
    flat: list[str] = []
    for part in target:
        if isinstance(part, list):
            flat.append(" >>> ".join(str(item) for item in part))
        else:
            flat.append(str(part))
    return flat


def _shorten(html: str, limit: int = 160) -> str:
    one_line = " ".join(html.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"
