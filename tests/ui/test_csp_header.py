"""The Content-Security-Policy header is on every HTML response, and no page needs an exception
to it: no inline <script>, no style attribute, no inline event handler, no javascript: URL."""

from __future__ import annotations

import re

from django.urls import reverse

from tests.ui.test_views import admin_urls, login
from vms.models import VirtualMachine

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "font-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "frame-ancestors": "'self'",
    "form-action": "'self'",
}

# The VM page and the console window: the pages that can open the serial console.
VM_PAGE = re.compile(r"/vms/\d+/(console/)?(\?|$)")

INLINE = [
    re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.I),  # a script without src
    re.compile(r"<style[\s>]", re.I),
    re.compile(r"\sstyle=[\"']", re.I),
    re.compile(r"\son[a-z]+=[\"']", re.I),
    re.compile(r"javascript:", re.I),
]


def directives(header: str) -> dict[str, str]:
    parts = (p.strip().split(None, 1) for p in header.split(";") if p.strip())
    return {p[0]: (p[1] if len(p) > 1 else "") for p in parts}


def check(response, url: str) -> None:
    assert response.status_code == 200, url
    assert response["Content-Type"].startswith("text/html"), url
    expected = dict(POLICY)
    if VM_PAGE.match(url):
        # The one exception: xterm.js's <style> elements (vms.views.XTERM_STYLES).
        expected["style-src-elem"] = "'self' 'unsafe-inline'"
    assert directives(response["Content-Security-Policy"]) == expected, url
    html = response.content.decode()
    for pattern in INLINE:
        match = pattern.search(html)
        assert not match, f"{url}: {match.group(0)!r} needs an exception to the policy"


def test_login_page_has_the_policy(client, db):
    url = reverse("login")
    check(client.get(url), url)


def test_every_html_page_has_the_policy_and_nothing_inline(client, admin_user, synced_host, tenant):
    VirtualMachine.objects.filter(host=synced_host, name__startswith="web-").update(tenant=tenant)
    vm = VirtualMachine.objects.filter(host=synced_host, disks__isnull=False).order_by("name")[0]
    pool = synced_host.pools.order_by("name").first()
    login(client, admin_user)
    urls = [
        *admin_urls(synced_host, tenant),
        reverse("ui:vm", args=[vm.pk]) + "?tab=console",
        reverse("ui:vm_console_popout", args=[vm.pk]),
        reverse("ui:vm_create"),
        reverse("ui:volume_upload", args=[pool.pk]),
        reverse("ui:volume_create", args=[pool.pk]),
        reverse("ui:tenant", args=[tenant.pk]),
    ]
    for url in urls:
        response = client.get(url)
        if response["Content-Type"].startswith("text/html"):
            check(response, url)
        else:
            assert "Content-Security-Policy" in response, url
