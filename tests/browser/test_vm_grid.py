"""The VM grid in a real browser on the simulated host: a column header sorts (?ordering=, the
filters kept in the URL), rows are selected (one by one and all at once), a bulk start gives
each stopped VM its task and refuses the running one with its reason, the group's result shows
in place, and the started VMs' states change without a reload (live.js). Screenshots go to
test-artifacts/vm-grid-*.png."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import BROWSER, log_in, shot
from tests.browser.test_live import wait_live

pytestmark = BROWSER


def _memory_cells(page) -> list[int]:
    """The Memory column's values in MiB, top to bottom."""
    values = []
    for text in page.locator("table.grid-vms tbody tr td:nth-child(8)").all_inner_texts():
        number, unit = text.split()
        values.append(int(float(number) * (1024 if unit.startswith("G") else 1)))
    return values


def test_vm_grid_sorts_selects_and_starts_in_bulk(watched_host, asgi_server, page):
    from vms.models import VirtualMachine

    base = asgi_server
    vms = VirtualMachine.objects.filter(host=watched_host, is_template=False).order_by("name")
    stopped = list(vms.filter(state="shutoff")[:2])
    running = vms.filter(state="running").first()
    assert len(stopped) == 2 and running is not None
    # Different memory sizes, so the sort has something to show.
    for i, vm in enumerate(vms):
        VirtualMachine.objects.filter(pk=vm.pk).update(memory_mib=256 * (1 + (i * 7) % 5))

    log_in(page, base)
    page.goto(f"{base}/vms/?state=shutoff")
    wait_live(page)
    # Sort by memory: the header is a link that keeps the state filter.
    page.click('th a[data-sort="memory_mib"]')
    expect(page).to_have_url(re.compile(r"ordering=memory_mib"))
    assert "state=shutoff" in page.url
    ascending = _memory_cells(page)
    assert ascending == sorted(ascending) and len(set(ascending)) > 1
    expect(page.locator("th.sorted-asc a[data-sort=memory_mib]")).to_be_visible()
    page.click('th a[data-sort="memory_mib"]')
    expect(page).to_have_url(re.compile(r"ordering=-memory_mib"))
    descending = _memory_cells(page)
    assert descending == sorted(descending, reverse=True)
    shot(page, "vm-grid-sorted")

    # Select all, then none: the bar follows.
    page.goto(f"{base}/vms/?ordering=name&limit=100")
    wait_live(page)
    bar = page.locator("form[data-grid-bulk]")
    expect(bar.locator("button[value=start]")).to_be_disabled()
    page.check("input[data-grid-all]")
    boxes = page.locator('input[name="ids"]')
    expect(bar.locator("[data-grid-count]")).to_have_text(f"{boxes.count()} VMs selected")
    page.uncheck("input[data-grid-all]")
    expect(bar.locator("[data-grid-count]")).to_have_text("No VM selected")

    # Two stopped VMs and a running one, then Start: a task each for the stopped ones.
    page.evaluate("window.__sameDocument = true")
    for vm in [*stopped, running]:
        page.check(f'input[name="ids"][value="{vm.pk}"]')
    expect(bar.locator("[data-grid-count]")).to_have_text("3 VMs selected")
    expect(page.locator("input[data-grid-all]")).to_have_js_property("indeterminate", True)
    shot(page, "vm-grid-selected")
    bar.locator("button[value=start]").click()

    group = page.locator("[data-bulk-group]")
    expect(group).to_be_visible()
    expect(group).to_contain_text("Start")
    expect(group).to_contain_text("2 tasks queued, 1 refused")
    for vm in stopped:
        expect(group.locator(f'[data-bulk-vm="{vm.pk}"]')).to_contain_text(vm.name)
    refused = group.locator(f'[data-bulk-refused="{running.pk}"]')
    expect(refused).to_contain_text(running.name)
    expect(refused).to_contain_text("Cannot start a VM that is running")
    # The started VMs' states change on this page, without a reload.
    for vm in stopped:
        cell = page.locator(f'td[data-vm-id="{vm.pk}"][data-vm-state-label]')
        expect(cell).to_have_attribute("data-vm-state", "running", timeout=20_000)
        expect(cell).to_have_text("Running")
    assert page.evaluate("window.__sameDocument") is True
    expect(page.locator('input[name="ids"]:checked')).to_have_count(0)
    shot(page, "vm-grid-bulk-result")
    assert set(
        VirtualMachine.objects.filter(pk__in=[vm.pk for vm in stopped]).values_list(
            "state", flat=True
        )
    ) == {"running"}


def test_stop_and_delete_ask_first(watched_host, asgi_server, page):
    from panel.models import Task
    from vms.models import VirtualMachine

    base = asgi_server
    vm = VirtualMachine.objects.filter(host=watched_host, state="running").order_by("name").first()
    log_in(page, base)
    page.goto(f"{base}/vms/?ordering=name&limit=100")
    wait_live(page)
    page.check(f'input[name="ids"][value="{vm.pk}"]')
    asked = []

    def dismiss(dialog):
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.locator("form[data-grid-bulk] button[value=stop]").click()
    expect(page.locator("[data-bulk-group]")).to_have_count(0)
    assert asked and "Stop the selected VMs?" in asked[0]
    assert not Task.objects.filter(kind="vm.power").exists()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("form[data-grid-bulk] button[value=stop]").click()
    expect(page.locator("[data-bulk-group]")).to_contain_text("1 task queued")
    cell = page.locator(f'td[data-vm-id="{vm.pk}"][data-vm-state-label]')
    expect(cell).to_have_attribute("data-vm-state", "shutoff", timeout=20_000)
    shot(page, "vm-grid-stopped")
