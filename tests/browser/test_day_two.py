"""Day-two fixes in a real browser on the simulated host: deleting a VM with snapshots works
and the page follows the task; a failed delete keeps the page and says why; the wizard's errors
sit at their fields (a disk larger than the pool, too little memory) and 1000 MiB is fine; a
simulated VM's console says plainly that there is none. Screenshots go to test-artifacts/."""

from __future__ import annotations

import math

import libvirt
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BROWSER, shot
from tests.browser.conftest import log_in as _log_in

pytestmark = BROWSER


@pytest.fixture
def page(live_server, open_page):
    """These pages need no websocket: pytest-django's WSGI live server serves them."""
    return open_page()


def log_in(page, base: str) -> None:
    _log_in(page, base, "root-admin", "pw-admin", start="/")


def _snapshotted_vm(host):
    """A shut-off qcow2 VM of the simulated host with a snapshot taken through the service."""
    from django.contrib.auth import get_user_model
    from django.db.models import Sum

    from tests.conftest import run_queued_tasks
    from vms import services
    from vms.models import Disk, VirtualMachine

    raw = Disk.objects.filter(device="disk").exclude(format="qcow2").values("vm")
    vm = (
        VirtualMachine.objects.filter(host=host, state="shutoff", is_template=False)
        .exclude(pk__in=raw)
        .exclude(clones__isnull=False)
        .annotate(size=Sum("disks__volume__capacity"))
        .order_by("size", "name")
        .first()
    )
    admin = get_user_model().objects.get(username="root-admin")
    services.snapshot_create(user=admin, vm=vm, name="before-upgrade", description="")
    run_queued_tasks()
    vm.refresh_from_db()
    assert vm.snapshots.filter(name="before-upgrade").exists()
    return vm


def _open_delete(page, base, vm):
    page.goto(f"{base}/vms/{vm.pk}/")
    page.click("[data-more]")
    page.locator(f'a[href="/vms/{vm.pk}/delete/"]').click()
    dialog = page.locator("dialog.modal")
    expect(dialog).to_contain_text(f"Delete {vm.name}?")
    return dialog


def test_deleting_a_vm_with_a_snapshot_works_and_then_shows_the_tenants_vms(
    live_host, live_server, page
):
    from vms.models import VirtualMachine

    vm = _snapshotted_vm(live_host)
    base = live_server.url
    log_in(page, base)
    dialog = _open_delete(page, base, vm)
    shot(page, "ui-delete-confirm")
    dialog.locator("[data-submit]").click()
    # The dialog follows the task, then the tenant's VMs are shown; the VM is gone.
    expect(page).to_have_url(f"{base}/tenants/{vm.tenant_id}/?tab=vms", timeout=15_000)
    shot(page, "ui-delete-done")
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert vm.name not in page.locator("main").inner_text()


def test_a_failed_delete_keeps_the_page_and_says_why(live_host, live_server, page, monkeypatch):
    from hosts.driver.guest import Guest
    from panel.models import Task
    from vms.models import VirtualMachine

    def refuse(self):
        raise libvirt.libvirtError("Requested operation is not valid: the domain is busy")

    monkeypatch.setattr(Guest, "undefine", refuse)
    vm = _snapshotted_vm(live_host)
    base = live_server.url
    log_in(page, base)
    dialog = _open_delete(page, base, vm)
    dialog.locator("[data-submit]").click()
    banner = dialog.locator("[data-task-state=failed]")
    expect(banner).to_contain_text(f"Delete VM {vm.name} failed:", timeout=15_000)
    expect(banner).to_contain_text("the domain is busy")
    expect(banner).to_have_class("alert alert-error")
    expect(page).to_have_url(f"{base}/vms/{vm.pk}/")  # the page stayed
    shot(page, "ui-delete-failed")
    task = Task.objects.get(kind="vm.delete", vm=vm)
    assert task.state == "failed"
    assert VirtualMachine.objects.get(pk=vm.pk).lifecycle == "ready"
    # Closing the dialog leaves the VM's page, whose VM is still there.
    dialog.locator("[data-dialog-close]").last.click()
    expect(page.locator("h1")).to_have_text(vm.name)


def _to_step(page, step: str):
    page.click(f"[data-step-tab={step}]")
    expect(page.locator("form[data-wizard] .wizard-tab.active")).to_contain_text(
        step.capitalize() if step != "os" else "OS"
    )


def test_the_wizards_errors_sit_at_their_fields(live_host, tenant, live_server, page):
    from hosts.models import StoragePool
    from panel.units import GIB

    pool = StoragePool.objects.get(host=live_host, name="default")
    free = pool.available / GIB
    asked = math.ceil(free) + 100
    base = live_server.url
    log_in(page, base)
    page.goto(f"{base}/vms/create/")
    wizard = page.locator("form[data-wizard]")
    page.fill("#id_name", "wiz-02")
    page.select_option("#id_tenant", label="acme")
    with page.expect_response(lambda r: "/vms/create/options/" in r.url):
        page.select_option("#id_host", str(live_host.pk))

    # Too little memory: the message is at the field, by its label, and stays there.
    _to_step(page, "memory")
    page.fill("#id_memory_mib", "32")
    page.click("[data-wizard-next]")
    error = page.locator("#id_memory_mib ~ .field-error")
    expect(error).to_have_text("Memory (MiB): at least 64.")
    expect(wizard.locator(".wizard-tab.active")).to_have_text("Memory")
    page.mouse.click(5, 5)  # a click elsewhere: a browser tooltip would be gone now
    expect(error).to_be_visible()
    shot(page, "ui-wizard-memory-error")
    # 1000 MiB is no multiple of 64 and is fine: the message goes, Next goes on.
    page.fill("#id_memory_mib", "1000")
    expect(error).to_have_count(0)
    page.click("[data-wizard-next]")
    expect(wizard.locator(".wizard-tab.active")).to_have_text("Network")

    # A qcow2 disk larger than the pool: the server's refusal, with the numbers, at the disk.
    _to_step(page, "disks")
    row = wizard.locator("tbody[data-row=disk]").first
    row.locator("[data-disk-size]").fill(str(asked))
    page.click("[data-step-tab=confirm]")
    page.click("[data-wizard-finish]")
    expect(wizard.locator(".wizard-tab.active")).to_have_text("Disks!")
    said = f"{asked} GiB asked, {free:.1f} GiB free on pool default.".replace(".0 ", " ")
    row = wizard.locator("tbody[data-row=disk]").first
    expect(row.locator(".field-error")).to_have_text(said)
    expect(row.locator("[data-disk-size]")).to_have_class("num-input is-invalid")
    expect(wizard.locator(".wizard-step.active .field-error")).to_have_count(1)
    expect(page.locator("#id_memory_mib")).to_have_value("1000")  # nothing else is lost
    shot(page, "ui-wizard-disk-too-big")


def test_a_simulated_vms_console_says_there_is_none(live_host, live_server, page):
    from vms.models import VirtualMachine

    vm = VirtualMachine.objects.filter(host=live_host, state="running", is_template=False).first()
    base = live_server.url
    log_in(page, base)
    tickets = []  # POST /api/vms/{id}/console/ asks for a ticket (a GET says who is connected)
    page.on("request", lambda r: r.method == "POST" and "/console/" in r.url and tickets.append(r))
    page.goto(f"{base}/vms/{vm.pk}/")
    tab = page.locator("nav.tabs a[data-tab=console]")
    expect(tab).to_contain_text("none on a simulated host")
    tab.click()
    console = page.locator("[data-console]")
    expect(console).to_have_attribute("data-console-state", "simulated")
    expect(console.locator("[data-console-state]")).to_have_text(
        "The simulated host has no console."
    )
    expect(console.locator("[data-console-simulated]")).to_be_visible()
    expect(console.locator("[data-console-reconnect]")).to_be_hidden()
    expect(console.locator("[data-console-ctrlaltdel]")).to_be_hidden()
    assert not tickets, "asked for a console ticket"
    shot(page, "ui-console-simulated")


def test_a_create_the_host_refuses_comes_back_to_the_wizard_saying_why(
    live_host, tenant, live_server, page, monkeypatch
):
    from hosts.driver.guest import Guest
    from vms.models import VirtualMachine

    def refuse(cls, conn, xml):
        raise libvirt.libvirtError("XML error: the host refused this definition")

    monkeypatch.setattr(Guest, "define", classmethod(refuse))
    base = live_server.url
    log_in(page, base)
    page.goto(f"{base}/vms/create/")
    wizard = page.locator("form[data-wizard]")
    page.fill("#id_name", "wiz-03")
    page.select_option("#id_tenant", label="acme")
    with page.expect_response(lambda r: "/vms/create/options/" in r.url):
        page.select_option("#id_host", str(live_host.pk))
    _to_step(page, "disks")
    wizard.locator("tbody[data-row=disk]").first.locator("[data-disk-size]").fill("2")
    page.click("[data-step-tab=confirm]")
    page.click("[data-wizard-finish]")
    # The task ran in this process and was rolled back: the wizard says why, input kept.
    expect(wizard.locator(".wizard-tab.active")).to_have_text("Confirm!")
    alert = wizard.locator(".wizard-step.active .alert-error")
    expect(alert).to_contain_text("Creating wiz-03 on sim-01 failed:")
    expect(alert).to_contain_text("the host refused this definition")
    expect(page.locator("#id_name")).to_have_value("wiz-03")
    shot(page, "ui-wizard-create-failed")
    assert not VirtualMachine.objects.filter(name="wiz-03").exists()
