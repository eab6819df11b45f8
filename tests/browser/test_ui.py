"""The console in a real browser: log in, walk the tree, read a host's NUMA topology, open a VM's
hardware, re-sync a host and watch the task bar. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BROWSER, shot
from tests.browser.conftest import log_in as _log_in

pytestmark = BROWSER


@pytest.fixture
def page(live_server, open_page):
    """These pages need no websocket: pytest-django's WSGI live server serves them."""
    return open_page()


def log_in(page, base: str, username: str, password: str) -> None:
    _log_in(page, base, username, password, start="/", screenshot="ui-login")


def test_admin_walks_the_console_and_resyncs_a_host(live_host, live_server, page):
    from django.utils.timezone import now

    from hosts.models import Host
    from panel.models import Task
    from vms.models import VirtualMachine

    base = live_server.url
    log_in(page, base, "root-admin", "pw-admin")

    # The tree shows the datacenter and the host; the datacenter summary counts the VMs.
    tree = page.locator("#tree")
    host_link = tree.locator(f'a.tree-link[href="/hosts/{live_host.pk}/"]')
    expect(host_link).to_contain_text("sim-01")
    expect(page.locator(".stat-big").nth(1)).to_have_text("36")
    shot(page, "ui-datacenter")

    # The host's summary draws its two NUMA cells.
    host_link.click()
    expect(page).to_have_url(f"{base}/hosts/{live_host.pk}/")
    expect(page.locator(".numa-cell")).to_have_count(2)
    expect(page.locator(".numa-cell").first).to_contain_text("Node 0")
    expect(page.locator(".numa")).to_contain_text("2 MiB")
    expect(page.get_by_text("simulated topology")).to_be_visible()
    expect(host_link).to_have_class("tree-link current")
    shot(page, "ui-host-summary")

    # Expanding the host's VM group loads its VMs lazily into the tree.
    vms_node = tree.locator(f'li[data-node="host-{live_host.pk}-vms"]')
    vms_node.locator(":scope > .tree-row > .twisty").click()
    vm = VirtualMachine.objects.filter(host=live_host, disks__isnull=False).order_by("name")[0]
    vm_link = vms_node.locator(f'a.tree-link[href="/vms/{vm.pk}/"]')
    expect(vm_link).to_be_visible()
    expect(vms_node.locator("li.leaf a.tree-link")).to_have_count(36)

    # The VM page and its hardware tab.
    vm_link.click()
    expect(page.locator("h1")).to_have_text(vm.name)
    expect(page.locator(".obj-title .state")).to_be_visible()
    page.get_by_role("link", name="Hardware").click()
    expect(page).to_have_url(f"{base}/vms/{vm.pk}/?tab=hardware")
    disks = page.locator("section.panel", has=page.locator("h2", has_text="Disks"))
    expect(disks.locator("tbody tr").first).to_contain_text(vm.disks.order_by("target")[0].target)
    nics = page.locator("section.panel", has=page.locator("h2", has_text="Network interfaces"))
    expect(nics).to_contain_text(vm.nics.first().mac)
    # The tree reopened the path to the VM and marks it as the current object.
    expect(tree.locator(f'a.tree-link.current[href="/vms/{vm.pk}/"]')).to_be_visible()
    shot(page, "ui-vm-hardware")

    # Re-sync the host: a new task appears in the task bar.
    page.goto(f"{base}/hosts/{live_host.pk}/")
    before = set(Task.objects.values_list("pk", flat=True))
    page.click("button[data-action=resync]")
    expect(page.locator(".flash")).to_contain_text("queued as task #")
    new = Task.objects.exclude(pk__in=before).get()
    assert new.kind == "host.sync" and new.host_id == live_host.pk
    row = page.locator(f"#task-row-{new.pk}")
    expect(row).to_contain_text("Sync host sim-01")
    expect(row).to_have_attribute("data-state", "succeeded", timeout=15_000)
    shot(page, "ui-resync-taskbar")

    # The task bar polls: a task started behind the page's back shows up by itself...
    later = Task.objects.create(
        kind="host.sync", state="running", progress=40, host=live_host, target="host sim-01"
    )
    expect(page.locator(f"#task-row-{later.pk}")).to_be_visible(timeout=10_000)
    expect(page.locator("#taskbar-summary")).to_contain_text("1 running")
    # ...a host it holds says it is busy, and stops saying so once the task ends.
    Host.objects.filter(pk=live_host.pk).update(lock=later)
    page.reload()
    banner = page.locator(".alert", has_text=f"task #{later.pk}")
    expect(banner).to_contain_text("Busy with")
    Task.objects.filter(pk=later.pk).update(state="succeeded", progress=100, finished=now())
    Host.objects.filter(pk=live_host.pk).update(lock=None)
    expect(banner).to_contain_text(f"Task #{later.pk} succeeded", timeout=10_000)
    expect(page.locator(f"#task-row-{later.pk}")).to_have_attribute("data-state", "succeeded")
    shot(page, "ui-busy-settled")

    # Clicking a task bar row opens the task with its log.
    page.locator(f"#task-row-{new.pk} a").click()
    expect(page.locator(".log")).to_contain_text("Synced 36 domains")
    shot(page, "ui-task-detail")


def test_search_and_keyboard(live_host, live_server, page):
    base = live_server.url
    log_in(page, base, "root-admin", "pw-admin")
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("/")
    expect(page.locator("input[name=q]").first).to_be_focused()
    page.keyboard.type("web")
    suggestions = page.locator("#search-pop .suggest-item")
    expect(suggestions.first).to_be_visible()
    expect(suggestions.first).to_contain_text("web-")
    shot(page, "ui-search-suggestions")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/vms/\d+/$"))
    expect(page.locator("h1")).to_contain_text("web-")

    # The task bar folds away and stays folded on the next page (rendered so by the server).
    page.click("[data-taskbar-toggle]")
    expect(page.locator("#taskbar")).to_have_class(re.compile(r"\bcollapsed\b"))
    expect(page.locator("#taskbar-body")).to_be_hidden()
    page.goto(base + "/")
    expect(page.locator("#taskbar")).to_have_class(re.compile(r"\bcollapsed\b"))
    page.click("[data-taskbar-toggle]")
    expect(page.locator("#taskbar-body")).to_be_visible()


def test_tenant_operator_sees_their_tenant_only(live_host, make_member, tenant, live_server, page):
    from panel.choices import Role
    from vms.models import VirtualMachine

    VirtualMachine.objects.filter(host=live_host, name__startswith="web-").update(tenant=tenant)
    user = make_member(tenant, Role.OPERATOR)
    user.set_password("pw-operator")
    user.save()
    base = live_server.url
    log_in(page, base, user.username, "pw-operator")

    tree = page.locator("#tree")
    expect(tree.locator(f'a.tree-link[href="/hosts/{live_host.pk}/"]')).to_have_count(0)
    node = tree.locator(f'li[data-node="tenant-{tenant.pk}"]')
    node.locator(":scope > .tree-row > .twisty").click()
    count = VirtualMachine.objects.filter(tenant=tenant).count()
    expect(node.locator("li.leaf a.tree-link")).to_have_count(count)
    page.goto(base + "/vms/")
    expect(page.locator("table.grid-vms tbody tr")).to_have_count(count)
    shot(page, "ui-tenant-vm-list")


def test_wizard_creates_a_vm_and_stop_asks_first(live_host, tenant, live_server, page):
    from panel.models import Task
    from vms.models import VirtualMachine

    base = live_server.url
    log_in(page, base, "root-admin", "pw-admin")
    page.click("a[data-create-vm]")
    expect(page).to_have_url(f"{base}/vms/create/")
    wizard = page.locator("form[data-wizard]")
    active = wizard.locator(".wizard-step.active")
    expect(wizard.locator(".wizard-tab.active")).to_have_text("General")

    # Next refuses to leave General without a name (the browser's own check).
    page.click("[data-wizard-next]")
    expect(wizard.locator(".wizard-tab.active")).to_have_text("General")

    # General: a name that exists on the host, to see the server's answer come back.
    page.fill("#id_name", "web-01")
    page.select_option("#id_tenant", label="acme")
    with page.expect_response(lambda r: "/vms/create/options/" in r.url):
        page.select_option("#id_host", str(live_host.pk))
    expect(page.locator("[data-host-summary]")).to_contain_text("Host sim-01: 32 CPUs")
    shot(page, "ui-wizard-general")
    page.click("[data-wizard-next]")

    # OS: the ISOs of the chosen host.
    expect(wizard.locator(".wizard-tab.active")).to_have_text("OS")
    page.select_option("#id_cdrom", label="debian-12.iso (isos)")
    shot(page, "ui-wizard-os")
    page.click("[data-wizard-next]")

    # Disks: a row is there already; add one and take it away again.
    expect(wizard.locator(".wizard-tab.active")).to_have_text("Disks")
    rows = active.locator("tbody[data-row=disk]")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("select[data-choices=pool]")).to_contain_text("default (dir,")
    page.click("[data-row-add=disk]")
    expect(rows).to_have_count(2)
    expect(rows.nth(1).locator("[data-row-label]")).to_have_text("2")
    rows.nth(1).locator("[data-row-remove]").click()
    expect(rows).to_have_count(1)
    rows.first.locator("[data-disk-size]").fill("4")
    shot(page, "ui-wizard-disks")
    page.click("[data-wizard-next]")

    # CPU and memory.
    expect(wizard.locator(".wizard-tab.active")).to_have_text("CPU")
    page.fill("#id_vcpus", "2")
    page.fill("#id_max_vcpus", "4")
    expect(page.locator("[data-host-cpus]")).to_contain_text("32 logical CPUs")
    shot(page, "ui-wizard-cpu")
    page.click("[data-wizard-next]")
    expect(wizard.locator(".wizard-tab.active")).to_have_text("Memory")
    page.click("[data-quick] [data-value='1024']")
    expect(page.locator("#id_memory_mib")).to_have_value("1024")
    shot(page, "ui-wizard-memory")
    page.click("[data-wizard-next]")

    # Network: one NIC on the first network, MAC chosen by Paddock.
    expect(wizard.locator(".wizard-tab.active")).to_have_text("Network")
    expect(active.locator("tbody[data-row=nic]")).to_have_count(1)
    shot(page, "ui-wizard-network")
    page.click("[data-wizard-next]")

    # Confirm: the summary of every step and the quota left.
    expect(wizard.locator(".wizard-tab.active")).to_have_text("Confirm")
    summary = page.locator("[data-summary]")
    expect(summary).to_contain_text("web-01")
    expect(summary).to_contain_text("4 GiB qcow2 on default")
    expect(summary).to_contain_text("1024 MiB")
    expect(wizard.locator("[data-quota-key=vcpus] [data-quota-asked]")).to_have_text("2")
    page.check("#id_start")
    shot(page, "ui-wizard-confirm")
    page.click("[data-wizard-finish]")

    # The server refuses the name; the wizard comes back on General with the message.
    expect(wizard.locator(".wizard-tab.active")).to_have_text("General!")
    expect(active).to_contain_text("A VM named web-01 exists on host sim-01")
    expect(page.locator("#id_memory_mib")).to_have_value("1024")  # nothing else is lost
    shot(page, "ui-wizard-error")
    page.fill("#id_name", "wiz-01")
    page.click("[data-step-tab=confirm]")
    page.click("[data-wizard-finish]")

    # The new VM's page; the task bar shows its creation, which ran and started it.
    expect(page.locator("h1")).to_have_text("wiz-01")
    vm = VirtualMachine.objects.get(name="wiz-01")
    task = Task.objects.get(kind="vm.create", vm=vm)
    expect(page.locator(".flash")).to_contain_text(f"task #{task.pk}")
    row = page.locator(f"#task-row-{task.pk}")
    expect(row).to_contain_text("Create VM wiz-01")
    expect(row).to_have_attribute("data-state", "succeeded", timeout=15_000)
    shot(page, "ui-wizard-created")
    page.reload()
    expect(page.locator(".obj-title .state")).to_contain_text("Running")

    # Stop asks first, in a dialog; confirming queues the task and the VM stops.
    page.click("[data-power=stop]")
    dialog = page.locator("dialog.modal")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("pulls the plug")
    shot(page, "ui-stop-confirm")
    dialog.get_by_role("button", name="Stop").click()
    expect(page.locator(".flash")).to_contain_text("Stop of wiz-01 queued as task #")
    stop = Task.objects.filter(kind="vm.power", vm=vm).get()
    expect(page.locator(f"#task-row-{stop.pk}")).to_have_attribute("data-state", "succeeded")
    shot(page, "ui-stop-queued")
    page.reload()
    expect(page.locator(".obj-title .state")).to_contain_text("Shut off")
    expect(page.locator("[data-power=start]")).to_be_enabled()
    shot(page, "ui-stopped")


def test_dialogs_keep_service_errors_in_place(live_host, live_server, page):
    from django.db.models import Sum

    from vms.models import Disk, VirtualMachine

    raw = Disk.objects.filter(device="disk").exclude(format="qcow2").values("vm")
    vm = (
        VirtualMachine.objects.filter(host=live_host, state="shutoff", firmware="bios")
        .exclude(pk__in=raw)
        .annotate(size=Sum("disks__volume__capacity"))
        .order_by("size", "name")
        .first()
    )
    base = live_server.url
    log_in(page, base, "root-admin", "pw-admin")
    page.goto(f"{base}/vms/{vm.pk}/?tab=snapshots")

    # A bad name: the service's message shows in the dialog, which stays open.
    page.get_by_role("link", name="Take snapshot").click()
    dialog = page.locator("dialog.modal")
    dialog.locator("input[name=name]").fill("before upgrade")
    dialog.locator("[data-submit]").click()
    expect(dialog.locator(".alert-error, .field-error")).to_contain_text("Use 1-63 letters")
    expect(dialog).to_be_visible()
    shot(page, "ui-snapshot-dialog-error")
    dialog.locator("input[name=name]").fill("before-upgrade")
    dialog.locator("textarea[name=description]").fill("the state we know works")
    dialog.locator("[data-submit]").click()
    expect(page.locator(".flash")).to_contain_text("Snapshot before-upgrade of")
    page.reload()
    expect(page.locator(".snap-tree")).to_contain_text("before-upgrade")
    expect(page.locator(".snap-tree tr.snap-current")).to_contain_text("current")
    expect(page.locator(".snap-tree tr.snap-now")).to_contain_text("NOW")
    shot(page, "ui-snapshots")

    # Growing refuses to shrink, saying why, without leaving the page.
    page.get_by_role("link", name="Hardware").click()
    page.locator("a[href*='/grow/']").first.click()
    dialog.locator("input[name=size_gib]").fill("1")
    dialog.locator("[data-submit]").click()
    expect(dialog).to_contain_text("Shrinking is refused")
    shot(page, "ui-grow-refused")
    dialog.locator("[data-dialog-close]").last.click()
    expect(dialog).to_be_hidden()
