"""The browser harness itself: Debian's Chromium over real HTTPS, axe-core, screenshots.

The pages are tiny static HTML served by aiohttp on loopback with a throw-away
self-signed certificate, under the strict Content-Security-Policy the web
interface will send (no script at all), so these tests show that the harness
works where the real pages will be.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from tests.support.browser import (
    WCAG_22_AA_TAGS,
    AccessibilityError,
    axe_rules,
    check_accessibility,
    new_page,
    save_screenshot,
)
from tests.support.https import serve_https

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

# A 1x1 GIF inline, so the page needs nothing but itself.
PIXEL = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"

LAYOUT = """<!doctype html>
<html lang="es">
<head><meta charset="utf-8"><title>{title} - Puente</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main>{body}</main></body>
</html>"""

ACCESSIBLE = LAYOUT.format(
    title="Llegadas de hoy",
    body=f"""<h1>Llegadas de hoy</h1>
<p>Tres llegadas; una con niñas y niños, prioridad alta. Réception : ça marche.</p>
<img src="{PIXEL}" alt="Mapa del punto de entrada">
<form method="post" action="/echo">
  <label for="reason">Motivo de la remisión</label>
  <input id="reason" name="reason" type="text" autocomplete="off">
  <button type="submit">Enviar</button>
</form>""",
)

INACCESSIBLE = LAYOUT.format(
    title="Llegadas de hoy",
    body=f"""<h1>Llegadas de hoy</h1>
<img src="{PIXEL}">
<form method="post" action="/echo"><input id="reason" name="reason" type="text"></form>""",
)

TALL = LAYOUT.format(
    title="Registro de auditoría",
    body="<h1>Registro de auditoría</h1>"
    + "".join(f"<p>Entrada {number}: divulgación registrada.</p>" for number in range(200)),
)


def static_site(seen_languages: list[str]) -> web.Application:
    """Three pages and a form echo, each answer with the strict CSP."""
    pages = {"/accessible": ACCESSIBLE, "/inaccessible": INACCESSIBLE, "/tall": TALL}

    async def page(request: web.Request) -> web.Response:
        seen_languages.append(request.headers.get("Accept-Language", ""))
        return html(pages[request.path])

    async def echo(request: web.Request) -> web.Response:
        form = await request.post()
        reason = str(form.get("reason", ""))
        return html(LAYOUT.format(title="Recibido", body=f"<h1>Recibido: {reason}</h1>"))

    def html(text: str) -> web.Response:
        return web.Response(
            text=text, content_type="text/html", headers={"Content-Security-Policy": CSP}
        )

    app = web.Application()
    for path in pages:
        app.router.add_get(path, page)
    app.router.add_post("/echo", echo)
    return app


async def test_page_over_https_in_spanish(page: Page) -> None:
    languages: list[str] = []
    async with serve_https(static_site(languages)) as base_url:
        response = await page.goto(f"{base_url}/accessible")
        assert response is not None and response.ok
        security = await response.security_details()
        assert security is not None and str(security.get("protocol", "")).startswith("TLS")
        assert await page.title() == "Llegadas de hoy - Puente"
        assert await page.locator("h1").inner_text() == "Llegadas de hoy"
        assert "niñas y niños" in await page.locator("main p").inner_text()
    assert page.url.startswith("https://127.0.0.1:")
    assert languages and languages[0].startswith("es-419")


async def test_axe_passes_an_accessible_page(page: Page) -> None:
    async with serve_https(static_site([])) as base_url:
        await page.goto(f"{base_url}/accessible")
        report = await check_accessibility(page)
        # An axe-core that knew no WCAG 2.2 rule would pass anything tagged wcag22aa.
        assert "target-size" in await axe_rules(page, ["wcag22aa"])
        assert len(await axe_rules(page, WCAG_22_AA_TAGS)) > 40
    assert report.axe_version.startswith("4.")
    assert not [v for v in report.minor if v.impact in {"serious", "critical"}]


async def test_axe_fails_a_page_with_an_unlabelled_image_and_input(page: Page) -> None:
    async with serve_https(static_site([])) as base_url:
        await page.goto(f"{base_url}/inaccessible")
        with pytest.raises(AccessibilityError) as raised:
            await check_accessibility(page)
    found = {violation.rule: violation for violation in raised.value.violations}
    assert set(found) >= {"image-alt", "label"}
    assert found["image-alt"].impact == "critical"
    assert [node.target for node in found["label"].nodes] == ["#reason"]
    message = str(raised.value)
    assert "image-alt [critical]" in message and "#reason" in message
    assert "/inaccessible:\n1. " in message


async def test_forms_work_without_javascript(browser: Browser) -> None:
    async with (
        serve_https(static_site([])) as base_url,
        new_page(browser, javascript=False) as page,
    ):
        await page.goto(f"{base_url}/accessible")
        await page.get_by_label("Motivo de la remisión").fill("atención médica")
        await page.get_by_role("button", name="Enviar").click()
        await page.wait_for_url(f"{base_url}/echo")
        assert await page.locator("h1").inner_text() == "Recibido: atención médica"
        with pytest.raises(RuntimeError, match="axe-core needs JavaScript"):
            await check_accessibility(page)


async def test_full_page_screenshot(page: Page, tmp_path: Path) -> None:
    async with serve_https(static_site([])) as base_url:
        await page.goto(f"{base_url}/tall")
        viewport = page.viewport_size
        shot = await save_screenshot(page, tmp_path / "shots" / "registro.png")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
    assert viewport is not None
    assert width == viewport["width"]
    assert height > 2 * viewport["height"]  # the whole page, not the first screen
