"""Cancelling tasks and results in place, in headless Chromium on the simulated host.

- Stop while a shutdown waits for a guest that ignores ACPI: the VM page's banner counts down,
  Stop stays enabled, and pressing it ends the shutdown ``cancelled`` and stops the VM.
- The banner's Cancel ends a waiting shutdown ``cancelled``; the VM keeps running.
- Snapshot create/revert/delete and volume create/delete: the tab or the pool's volume list is
  drawn again in place when the task ends; the page is never reloaded (a mark set on the window
  survives).

Tasks run on the embedded Celery worker (a thread, the in-memory broker), not inside the
request, and each of the kinds here is slowed a little, so the page is always drawn while its
task is still unfinished and must follow it to the end.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from playwright.sync_api import expect

from hosts.driver.guest import Guest
from panel import taskrunner
from panel.models import Task
from tests.browser.conftest import BROWSER, log_in, shot

pytestmark = BROWSER

SLOWED = ("vm.snapshot_create", "vm.snapshot_revert", "vm.snapshot_delete", "volume.create",
          "volume.delete")  # fmt: skip


@pytest.fixture
def slow_kinds(monkeypatch):
    for name in SLOWED:
        kind = taskrunner.get_kind(name)

        def slow(ctx, handler=kind.handler):
            time.sleep(1.5)
            return handler(ctx)

        monkeypatch.setitem(taskrunner._KINDS, name, replace(kind, handler=slow))


@pytest.fixture
def deaf_guests(monkeypatch):
    """Guests that ignore the ACPI power button (as a guest without acpid does)."""
    monkeypatch.setattr(Guest, "shutdown", lambda self: None)


def _running_vm(host):
    from vms.models import VirtualMachine

    return (
        VirtualMachine.objects.filter(host=host, state="running", is_template=False)
        .order_by("name")
        .first()
    )


def _mark(page) -> None:
    page.evaluate("window.__notReloaded = true")


def _not_reloaded(page) -> bool:
    return page.evaluate("window.__notReloaded === true")


def _press_shutdown(page, base, vm) -> Task:
    page.goto(f"{base}/vms/{vm.pk}/")
    page.locator('button[data-power="shutdown"]').click()
    banner = page.locator("[data-follow-task]")
    expect(banner).to_contain_text("waiting for the guest", timeout=15_000)
    expect(banner.locator(".countdown")).to_contain_text(":")
    return Task.objects.filter(vm=vm, kind="vm.power").order_by("-id").first()


def test_stop_during_a_pending_shutdown(live_host, asgi_server, worker_thread, deaf_guests, page):
    vm = _running_vm(live_host)
    base = asgi_server
    log_in(page, base)
    shutdown = _press_shutdown(page, base, vm)
    banner = page.locator("[data-follow-task]")
    first = banner.locator(".countdown").inner_text()
    time.sleep(2.2)
    assert banner.locator(".countdown").inner_text() != first  # it counts down
    # Every other action waits for the shutdown; Stop does not.
    expect(page.locator('button[data-power="reboot"]')).to_be_disabled()
    stop = page.locator('a[data-power="stop"]')
    expect(stop).to_be_visible()
    shot(page, "cancel-stop-during-shutdown")
    stop.click()
    dialog = page.locator("dialog.modal")
    expect(dialog).to_contain_text(f"Stop {vm.name}?")
    dialog.locator("[data-submit]").click()
    expect(page.locator('[data-task-state="succeeded"]')).to_contain_text("done", timeout=15_000)
    shot(page, "cancel-stop-done")
    shutdown.refresh_from_db()
    vm.refresh_from_db()
    assert shutdown.state == "cancelled", shutdown.error
    assert shutdown.error == "Cancelled by root-admin."
    assert vm.state == "shutoff" and vm.lock_id is None
    stop_task = Task.objects.filter(vm=vm, kind="vm.power").order_by("-id").first()
    assert stop_task.params["action"] == "stop" and stop_task.state == "succeeded"


def test_cancel_of_a_waiting_shutdown_from_the_banner(
    live_host, asgi_server, worker_thread, deaf_guests, page
):
    vm = _running_vm(live_host)
    base = asgi_server
    log_in(page, base)
    shutdown = _press_shutdown(page, base, vm)
    page.locator("[data-follow-task] [data-cancel-task]").click()
    settled = page.locator('[data-task-state="cancelled"]')
    expect(settled).to_contain_text("cancelled", timeout=15_000)
    expect(settled).to_contain_text("Cancelled by root-admin.")
    shot(page, "cancel-shutdown-cancelled")
    shutdown.refresh_from_db()
    vm.refresh_from_db()
    assert shutdown.state == "cancelled"
    assert vm.state == "running" and vm.lock_id is None
    # The task's page says so too, with no Cancel left to press.
    page.goto(f"{base}/tasks/{shutdown.pk}/")
    expect(page.locator("#task-live")).to_contain_text("Cancelled by root-admin.")
    expect(page.locator("[data-cancel-task]")).to_have_count(0)


def _dialog_submit(page, fill: dict | None = None) -> None:
    dialog = page.locator("dialog.modal")
    expect(dialog).to_be_visible()
    for selector, value in (fill or {}).items():
        dialog.locator(selector).fill(value)
    dialog.locator("[data-submit]").click()


def test_snapshot_results_appear_in_place(live_host, asgi_server, worker_thread, slow_kinds, page):
    vm = _running_vm(live_host)
    base = asgi_server
    log_in(page, base)
    page.goto(f"{base}/vms/{vm.pk}/?tab=snapshots")
    page.get_by_role("link", name="Take snapshot").click()
    _dialog_submit(page, {"#id_name": "in-place-1"})
    banner = page.locator("[data-follow-task]")
    expect(banner).to_be_visible()
    _mark(page)  # the page the action came back to; no reload from here on
    names = page.locator('[data-refresh="tab"] .snap-name')
    expect(names).to_contain_text(["in-place-1"], timeout=15_000)
    expect(page.locator('[data-task-state="succeeded"]')).to_be_visible()
    assert _not_reloaded(page)
    shot(page, "results-snapshot-created")

    # Revert to it: the tab marks it current, in place.
    row = page.locator("tr", has=page.locator(".snap-name", has_text="in-place-1"))
    row.get_by_role("link", name="Revert").click()
    _dialog_submit(page)
    expect(page.locator("[data-follow-task]")).to_be_visible()
    _mark(page)
    expect(page.locator('[data-task-state="succeeded"]')).to_be_visible(timeout=15_000)
    expect(page.locator('[data-refresh="tab"] tr.snap-current .snap-name')).to_have_text(
        "in-place-1"
    )
    assert _not_reloaded(page)

    # Delete it: its row leaves the table, in place.
    row = page.locator("tr", has=page.locator(".snap-name", has_text="in-place-1"))
    row.get_by_role("link", name="Delete").click()
    _dialog_submit(page)
    expect(page.locator("[data-follow-task]")).to_be_visible()
    _mark(page)
    expect(page.locator('[data-refresh="tab"] .snap-name', has_text="in-place-1")).to_have_count(
        0, timeout=15_000
    )
    assert _not_reloaded(page)
    shot(page, "results-snapshot-deleted")


def test_volume_results_appear_in_place(live_host, asgi_server, worker_thread, slow_kinds, page):
    from hosts.models import StoragePool

    pool = StoragePool.objects.get(host=live_host, name="default")
    base = asgi_server
    log_in(page, base)
    page.goto(f"{base}/pools/{pool.pk}/")
    page.get_by_role("link", name="Create volume").click()
    _dialog_submit(page, {"#id_name": "in-place.qcow2", "#id_size_gib": "1"})
    expect(page.locator("[data-follow-task]")).to_be_visible()
    _mark(page)
    table = page.locator('[data-refresh="volumes"]')
    expect(table).to_contain_text("in-place.qcow2", timeout=15_000)
    assert _not_reloaded(page)
    shot(page, "results-volume-created")

    row = table.locator("tr", has_text="in-place.qcow2")
    row.get_by_role("link", name="Delete").click()
    _dialog_submit(page)
    expect(page.locator("[data-follow-task]")).to_be_visible()
    _mark(page)
    # Gone from the list as soon as its task ends, not at the next sync.
    expect(page.locator('[data-refresh="volumes"]')).not_to_contain_text(
        "in-place.qcow2", timeout=15_000
    )
    expect(page.locator('[data-task-state="succeeded"]')).to_be_visible()
    assert _not_reloaded(page)
    shot(page, "results-volume-deleted")
