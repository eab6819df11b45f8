"""A page never misses its own action's result: the action's task runs on a worker after the
page has already reloaded (the events it sends may come before the new page's socket is
there), and the page must still show the final state, and the buttons for it, without a reload.
Ten start/stop rounds in a row on the simulated host, on the VM's own page.

The page's socket asks what its objects are now on every connect (``{"current": ...}``,
``static/js/live.js``); without that the stale state stays. Tasks run on the embedded Celery
worker (a thread, the in-memory broker), not eagerly inside the request, so the worker and the
page race as they do in production; the race is made certain here: each power task takes 0.6 s
and a new socket joins its groups 1.5 s after it is accepted, so every task ends after the new
page was drawn and before its socket listens."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from playwright.sync_api import expect

from panel import taskrunner
from panel.consumers import EventsConsumer
from tests.browser.conftest import BROWSER, log_in, shot
from tests.browser.test_live import wait_live

pytestmark = BROWSER

ROUNDS = 10


@pytest.fixture
def the_race(monkeypatch):
    """Power tasks that take 0.6 s, sockets that listen 1.5 s after they open."""
    kind = taskrunner.get_kind("vm.power")

    def slow(ctx):
        time.sleep(0.6)
        return kind.handler(ctx)

    monkeypatch.setitem(taskrunner._KINDS, "vm.power", replace(kind, handler=slow))
    switch = EventsConsumer._switch

    async def late_switch(self, groups):
        if not self.joined:
            await asyncio.sleep(1.5)
        await switch(self, groups)

    monkeypatch.setattr(EventsConsumer, "_switch", late_switch)


def test_the_vm_page_shows_its_own_actions_result_every_time(
    watched_host, asgi_server, worker_thread, the_race, page
):
    from vms.models import VirtualMachine

    vm = (
        VirtualMachine.objects.filter(host=watched_host, state="running", is_template=False)
        .order_by("name")
        .first()
    )
    base = asgi_server
    log_in(page, base)
    page.goto(f"{base}/vms/{vm.pk}/")
    wait_live(page)
    header = page.locator(f'.obj-title .head-state[data-vm-id="{vm.pk}"]')
    page.evaluate("window.__sameDocument = true")  # gone if the page loads again
    state = "running"
    for n in range(ROUNDS):
        if state == "running":
            page.locator("a[data-power=stop]").click()  # asks for confirmation first
            shot(page, "own-actions-confirm") if n == 0 else None
            page.locator("dialog[open] button[type=submit]").click()
            state = "shutoff"
        else:
            page.locator("button[data-power=start]").click()
            state = "running"
        expect(header, f"round {n + 1}").to_have_attribute("data-vm-state", state, timeout=10_000)
        start = page.locator("button[data-power=start]")
        if state == "running":
            expect(start, f"round {n + 1}").to_be_disabled(timeout=10_000)
        else:
            expect(start, f"round {n + 1}").to_be_enabled(timeout=10_000)
        wait_live(page)
    # The actions' results came in place: the page never loaded again.
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "own-actions-final")


def test_a_list_page_learns_what_changed_before_its_socket_listened(
    live_host, asgi_server, the_race, page
):
    """No chart subscribes here: the page's own "current" question on connect does it."""
    from django.db import transaction

    from panel import events
    from tests.browser.test_live import in_thread
    from vms.models import VirtualMachine

    vm = VirtualMachine.objects.filter(host=live_host, state="running").order_by("name").first()
    base = asgi_server
    log_in(page, base)
    page.goto(f"{base}/vms/?q={vm.name}")
    label = page.locator(f'tr [data-vm-id="{vm.pk}"][data-vm-state-label]')
    expect(label).to_have_text("Running")

    def pause():  # while the new socket is not listening yet
        with transaction.atomic():
            VirtualMachine.objects.filter(pk=vm.pk).update(state="paused", desired_state="paused")
            vm.refresh_from_db()
            events.vm_changed(vm)

    in_thread(pause)
    wait_live(page)
    expect(label).to_have_text("Paused", timeout=5_000)
    expect(label).to_have_attribute("data-vm-state", "paused")
