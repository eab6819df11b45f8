"""The strict Content-Security-Policy in a real browser: every main page loads with no CSP
violation (no inline script or style anywhere), and the live-updates websocket to the same host
connects under connect-src 'self'. The ASGI application runs under uvicorn (the folder's
asgi_server) so the websocket is real. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BROWSER, shot

pytestmark = BROWSER

# Runs in every document before its own scripts: collects securitypolicyviolation events.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (ev) {
  window.__cspViolations.push(
    ev.violatedDirective + " blocked " + (ev.blockedURI || "inline") + " at " +
    (ev.sourceFile || document.location.href) + ":" + ev.lineNumber
  );
});
"""


def is_csp_message(text: str) -> bool:
    return "Content Security Policy" in text or "Refused to" in text


@pytest.fixture
def page(asgi_server, open_page):
    page = open_page(init_script=RECORD_VIOLATIONS)
    page.csp_messages = []  # type: ignore[attr-defined]
    page.on(
        "console",
        lambda m: page.csp_messages.append(m.text) if is_csp_message(m.text) else None,  # type: ignore[attr-defined]
    )
    return page


def visit(page, url: str) -> None:
    """Load ``url``, check the header, let its scripts run, then check nothing was refused."""
    response = page.goto(url)
    assert response is not None and response.ok, url
    policy = dict(
        p.strip().split(None, 1) for p in response.headers["content-security-policy"].split(";")
    )
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'", (url, policy)
    # The one exception: <style> elements for xterm.js on the VM pages (vms.views.XTERM_STYLES).
    exempt = re.search(r"/vms/\d+/(\?|$)", url) is not None
    assert policy.get("style-src-elem") == ("'self' 'unsafe-inline'" if exempt else None), url
    assert "style-src-attr" not in policy and "unsafe-eval" not in str(policy), (url, policy)
    page.wait_for_load_state("networkidle")
    violations = page.evaluate("window.__cspViolations")
    assert not violations, f"{url}: CSP violations {violations}"
    assert not page.csp_messages, f"{url}: console {page.csp_messages}"


def test_every_main_page_holds_the_strict_policy(asgi_server, live_host, page):
    from vms.models import VirtualMachine

    base = asgi_server
    visit(page, base + "/login/")
    page.fill("#id_username", "root-admin")
    page.fill("#id_password", "pw-admin")
    page.click("button[type=submit]")
    expect(page.locator("#tree")).to_be_visible()
    expect(page.locator("html[data-ready]")).to_be_attached()

    pool = live_host.pools.order_by("name").first()
    vm = VirtualMachine.objects.filter(host=live_host, disks__isnull=False).order_by("name")[0]
    running = VirtualMachine.objects.filter(host=live_host, state="running", is_template=False)
    running = running.order_by("name").first()
    pages = {
        "datacenter": "/",
        "host": f"/hosts/{live_host.pk}/",
        "pool": f"/pools/{pool.pk}/",
        "vm-summary": f"/vms/{vm.pk}/",
        "vm-hardware": f"/vms/{vm.pk}/?tab=hardware",
        "vm-console": f"/vms/{running.pk}/?tab=console",
        "tasks": "/tasks/",
        "tenants": "/tenants/",
        "create-wizard": "/vms/create/",
    }
    for name, path in pages.items():
        visit(page, base + path)
        if name in ("host", "pool"):
            shot(page, f"csp-{name}", full_page=True)
        if name == "vm-console":
            # The serial console loads xterm.js on demand. A simulated host has no console and
            # the page asks for none: told otherwise, it opens the terminal (refused with 4501).
            page.evaluate(
                "document.querySelector('[data-console]').removeAttribute('data-simulated')"
            )
            page.click("[data-console-kind=serial]")
            expect(page.locator(".serial-screen .xterm")).to_be_attached()
            page.wait_for_timeout(500)
            violations = page.evaluate("window.__cspViolations")
            assert not violations, f"serial console: CSP violations {violations}"
            assert not page.csp_messages, f"serial console: console {page.csp_messages}"

    # The live-updates socket is ws:// to this host: allowed by connect-src 'self'.
    ws_base = base.replace("http://", "ws://")
    assert any(url.startswith(ws_base + "/ws/") for url in page.sockets), page.sockets
