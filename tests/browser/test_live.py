"""Live updates in a real browser: the page's websocket to /ws/events/ re-draws a VM's state
when the host changes it out of band, feeds the task bar without polling and streams a task's
log. pytest-django's live_server speaks WSGI only, so the ASGI application runs under uvicorn
in a thread of this process (the in-memory channel layer then reaches it, and the test-driver
host's watcher shares this process's libvirt connection). The console test runs the tiny guest
on the real libvirtd (qemu:///system, TCG): a simulated VM has no console. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import threading
import uuid

import libvirt
import pytest
from django.db import connections
from lxml import etree
from playwright.sync_api import expect

from hosts.watcher import HostWatcher, ensure_event_loop, wait_until
from tests.browser.conftest import ARTIFACTS, BROWSER, log_in, shot
from tests.conftest import add_and_sync_host
from tests.integration import tinyguest
from vms.models import VirtualMachine

pytestmark = BROWSER

# The tiny guest's kernel and initrd, built once per session (registered for this module).
tiny_guest_files = tinyguest.tiny_guest_files


def in_thread(fn):
    """Run ``fn`` in a thread of its own: Playwright's event loop runs in the test's thread,
    where the channel layer's synchronous send refuses to run."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def wait_live(page) -> None:
    """The page's events socket said hello."""
    expect(page.locator('html[data-live="open"]')).to_be_attached(timeout=10_000)


def test_vm_state_changes_on_the_page_without_reload(watched_host, asgi_server, page):
    from hosts.driver.connection import get_connection
    from vms.models import VirtualMachine

    vm = (
        VirtualMachine.objects.filter(host=watched_host, state="running", is_template=False)
        .order_by("name")
        .first()
    )
    assert vm is not None
    base = asgi_server
    log_in(page, base)
    page.goto(f"{base}/vms/{vm.pk}/")
    wait_live(page)
    # The tree shows the VM too: open the host's VM group.
    vms_node = page.locator(f'li[data-node="host-{watched_host.pk}-vms"]')
    expect(vms_node).to_have_attribute("aria-expanded", "true")
    leaf = vms_node.locator(f'a.tree-link[data-vm-id="{vm.pk}"]')
    expect(leaf).to_have_attribute("data-vm-state", "running")
    header = page.locator(f'.obj-title .head-state[data-vm-id="{vm.pk}"]')
    expect(header).to_contain_text("Running")
    expect(page.locator("button[data-power=start]")).to_be_disabled()
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    shot(page, "live-vm-running")

    dom = get_connection(watched_host).lookupByUUIDString(str(vm.uuid))
    dom.destroy()  # out of band: not through Paddock's services

    expect(header).to_have_attribute("data-vm-state", "shutoff", timeout=10_000)
    expect(header).to_contain_text("Shut off")
    expect(page.locator(".obj-icon-wrap.vm-ico")).to_have_class(
        "obj-icon-wrap vm-ico state-shutoff"
    )
    expect(leaf).to_have_attribute("data-vm-state", "shutoff")
    expect(leaf.locator(".vm-ico")).to_have_class("ti-wrap vm-ico state-shutoff")
    summary = page.locator(f'table.kv [data-vm-id="{vm.pk}"]')
    expect(summary).to_contain_text("Shut off")
    # The header came back from the server with the buttons for a stopped VM.
    expect(page.locator("button[data-power=start]")).to_be_enabled()
    expect(page.locator("button[data-power=shutdown]")).to_be_disabled()
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "live-vm-shutoff")

    dom.create()
    expect(header).to_have_attribute("data-vm-state", "running", timeout=10_000)
    expect(leaf).to_have_attribute("data-vm-state", "running")
    expect(page.locator("button[data-power=start]")).to_be_disabled()
    assert page.evaluate("window.__sameDocument") is True

    # The VM list shows the change in its row as well.
    page.goto(f"{base}/vms/?q={vm.name}")
    wait_live(page)
    row = page.locator("tr", has=page.locator(f'[data-vm-id="{vm.pk}"]'))
    label = row.locator("[data-vm-state-label]")
    expect(label).to_have_text("Running")
    dom.suspend()
    expect(label).to_have_attribute("data-vm-state", "paused", timeout=10_000)
    expect(label).to_have_text("Paused")
    expect(row.locator(".state")).to_have_class("state state-paused")
    shot(page, "live-vm-list-paused")


def test_task_bar_follows_the_socket_not_polling(watched_host, asgi_server, page):
    from django.db import transaction

    from panel import events
    from panel.models import Task

    base = asgi_server
    log_in(page, base)
    page.goto(f"{base}/vms/")
    wait_live(page)
    page.wait_for_timeout(300)
    page.requests.clear()

    def start():
        with transaction.atomic():
            task = Task.objects.create(
                kind="host.sync", state="running", progress=40, host=watched_host, target="x"
            )
            events.task_changed(task)
        return task

    task = in_thread(start)
    row = page.locator(f"#task-row-{task.pk}")
    expect(row).to_be_visible(timeout=5_000)
    expect(row).to_have_attribute("data-state", "running")
    expect(page.locator("#taskbar-summary")).to_contain_text("1 running")

    def finish():
        with transaction.atomic():
            Task.objects.filter(pk=task.pk).update(state="succeeded", progress=100)
            task.refresh_from_db()
            events.task_changed(task)

    in_thread(finish)
    expect(row).to_have_attribute("data-state", "succeeded", timeout=5_000)
    # Five seconds without a poll of the whole bar: only the row was fetched.
    page.wait_for_timeout(5_000)
    polls = [u for u in page.requests if u.endswith("/tasks/bar/")]
    rows = [u for u in page.requests if f"/tasks/{task.pk}/row/" in u]
    assert not polls, polls
    assert rows
    expect(page.locator(f"#taskbar-rows #task-row-{task.pk}")).to_have_count(1)
    shot(page, "live-taskbar")

    # With the socket down the bar polls again.
    page.evaluate("Paddock.live.stopped = true; Paddock.live.ws.close()")
    expect(page.locator('html[data-live="down"]')).to_be_attached()
    page.requests.clear()
    page.wait_for_timeout(4_500)
    assert any(u.endswith("/tasks/bar/") for u in page.requests)


def test_task_page_streams_log_and_progress(watched_host, asgi_server, page):
    from django.db import transaction

    from panel import events
    from panel.models import Task

    task = Task.objects.create(
        kind="host.sync", state="running", progress=10, host=watched_host, target="host sim-01"
    )
    base = asgi_server
    log_in(page, base)
    page.goto(f"{base}/tasks/{task.pk}/")
    wait_live(page)
    expect(page.locator("html")).to_have_attribute("data-live", "open")
    page.wait_for_function("() => Paddock.live.keepAll === true")
    page.requests.clear()

    def progress():
        with transaction.atomic():
            events.task_log(task, "Reading the pools", "info")
            events.task_log(task, "Pool 'scratch' is inactive", "warning")
            Task.objects.filter(pk=task.pk).update(progress=60)
            task.refresh_from_db()
            events.task_changed(task)

    in_thread(progress)
    log = page.locator("[data-task-log]")
    expect(log).to_contain_text("Reading the pools", timeout=5_000)
    expect(log.locator(".log-warning")).to_contain_text("Pool 'scratch' is inactive")
    expect(page.locator("[data-task-progress-text]")).to_have_text("60%")
    expect(page.locator("[data-task-progress]")).to_have_attribute("style", "width: 60%;")
    # Lines came over the socket, not from polling the task.
    assert not [u for u in page.requests if u.endswith(f"/tasks/{task.pk}/live/")]
    shot(page, "live-task-log")


@pytest.fixture
def tiny_console_vm(transactional_db, admin_user, tiny_guest_files):
    """The tiny guest running on the real libvirtd (qemu:///system, TCG), booted to its
    shell, on a host added through the service and watched in this process: (vm, domain).

    Its serial console is a pty the page can open, logged to a file as well, so the guest is
    known to be up before the page opens. The guest and its log go at teardown."""
    ensure_event_loop()  # before any connection that needs events or streams opens
    kernel, initrd = tiny_guest_files
    conn = libvirt.open(tinyguest.URI)
    prefix = f"{tinyguest.PREFIX}{uuid.uuid4().hex[:8]}-"
    name = f"{prefix}console"
    serial_log = tinyguest.image_dir() / f"{name}.log"
    xml = etree.fromstring(tinyguest.tiny_guest_xml(name, kernel, initrd, serial_log=None))
    etree.SubElement(xml.find("devices/serial"), "log", file=str(serial_log), append="off")
    watcher = None
    try:
        dom = conn.defineXML(etree.tostring(xml).decode())
        dom.create()
        if tinyguest.wait_for_text(serial_log) is None:
            raise AssertionError(f"{name}: no {tinyguest.READY_MARKER!r} on its serial console")
        host = add_and_sync_host(admin_user, tinyguest.URI, name="local")
        assert host.status == "online", host.last_error
        assert not host.simulated
        vm = VirtualMachine.objects.get(host=host, uuid=dom.UUIDString())
        watcher = HostWatcher(host.pk).start()
        assert watcher.ready.wait(15), watcher.last_error
        assert wait_until(lambda: watcher.stats["reconciles"] >= 1, 30)
        yield vm, dom
    finally:
        if watcher is not None:
            watcher.stop()
        try:
            tinyguest.cleanup(conn, prefix)
        finally:
            serial_log.unlink(missing_ok=True)
            conn.close()


# The canvas noVNC draws on holds more than one colour: the guest's screen, not a blank.
CANVAS_DRAWN = """root => {
    const canvas = root.querySelector("[data-console-screen] canvas");
    if (!canvas || !canvas.width || !canvas.height) return false;
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const first = data[0] << 16 | data[1] << 8 | data[2];
    for (let i = 4; i < data.length; i += 4) {
        if ((data[i] << 16 | data[i + 1] << 8 | data[i + 2]) !== first) return true;
    }
    return false;
}"""


@pytest.mark.integration
def test_console_tab_in_one_click(tiny_console_vm, asgi_server, page):
    """A VM on the real libvirtd: one click on the Console tab asks for a ticket (with the
    CSRF header) and draws the guest's display; the serial kind gets a ticket of its own and
    shows what the guest prints; a stopped VM gets a message instead, starting it connects
    again; the pop-out window is the console alone. (A simulated VM's tab says it has none:
    tests/browser/test_day_two.py.)"""
    vm, dom = tiny_console_vm
    base = asgi_server
    log_in(page, base)
    page.goto(f"{base}/vms/{vm.pk}/")
    wait_live(page)
    tickets = []
    page.on(
        "request",
        lambda r: tickets.append(r) if r.method == "POST" and "/console/" in r.url else None,
    )
    tab = page.locator("nav.tabs a[data-tab=console]")
    expect(tab).not_to_contain_text("simulated")
    tab.click()
    console = page.locator("[data-console]")
    expect(console).to_have_attribute("data-console-state", "connected", timeout=30_000)
    expect(console.locator("[data-console-state]")).to_have_text("Connected")
    assert len(tickets) == 1 and tickets[0].post_data_json == {"kind": "vnc"}
    assert tickets[0].headers.get("x-csrftoken")
    assert tickets[0].response().status == 201
    assert any(f"/ws/console/{vm.pk}/vnc/" in url for url in page.sockets)
    page.wait_for_function(CANVAS_DRAWN, arg=console.element_handle(), timeout=30_000)
    shot(page, "live-console-vnc")
    console.locator("[data-console-screen] canvas").screenshot(
        path=str(ARTIFACTS / "live-console-vnc-screen.png")
    )

    # Serial: a ticket of its own, the guest's shell on ttyS0, keystrokes typed in the page.
    console.locator("[data-console-kind=serial]").click()
    expect(console).to_have_attribute("data-kind", "serial")
    expect(console).to_have_attribute("data-console-state", "connected", timeout=30_000)
    assert [t.post_data_json["kind"] for t in tickets] == ["vnc", "serial"]
    assert tickets[1].headers.get("x-csrftoken") and tickets[1].response().status == 201
    terminal = console.locator(".xterm-rows")
    console.locator(".xterm").click()
    page.keyboard.type("echo hi-paddock-$((40+2))")
    page.keyboard.press("Enter")
    expect(terminal).to_contain_text("hi-paddock-42", timeout=60_000)
    shot(page, "live-console-serial")

    # The VM stops: a clear message instead of a console.
    in_thread(dom.destroy)
    off = console.locator("[data-console-off]")
    expect(off).to_be_visible(timeout=15_000)
    expect(off).to_contain_text("is not running")
    expect(console).to_have_attribute("data-console-state", "off")
    expect(console.locator("[data-console-screen]")).to_be_hidden()
    shot(page, "live-console-off")

    # Started again (paused, so no boot line is printed before the console is there): the
    # tab connects by itself and shows the guest's boot on the serial console.
    in_thread(lambda: dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED))
    expect(off).to_be_hidden(timeout=15_000)
    expect(console).to_have_attribute("data-console-state", "connected", timeout=30_000)
    assert [t.post_data_json["kind"] for t in tickets] == ["vnc", "serial", "serial"]
    in_thread(dom.resume)
    expect(terminal).to_contain_text(tinyguest.READY_MARKER, timeout=tinyguest.BOOT_TIMEOUT * 1000)
    shot(page, "live-console-serial-boot")

    # The pop-out window is the console alone, connected; this tab steps aside for it.
    console.locator("[data-console-kind=vnc]").click()
    expect(console).to_have_attribute("data-console-state", "connected", timeout=30_000)
    with page.expect_popup() as opened:
        console.locator("[data-console-popout]").click()
    popout = opened.value
    errors: list[str] = []
    popout.on("pageerror", lambda exc: errors.append(str(exc)))
    expect(popout).to_have_url(f"{base}/vms/{vm.pk}/console/?kind=vnc")
    alone = popout.locator("[data-console]")
    expect(alone).to_have_attribute("data-kind", "vnc")
    expect(alone).to_have_attribute("data-console-state", "connected", timeout=30_000)
    popout.wait_for_function(CANVAS_DRAWN, arg=alone.element_handle(), timeout=30_000)
    expect(popout.locator("#tree")).to_have_count(0)
    expect(popout.locator("nav.tabs")).to_have_count(0)
    expect(console.locator("[data-console-state]")).to_have_text("Opened in a separate window.")
    shot(popout, "live-console-popout")
    popout.close()
    assert not errors, errors


def test_charts_draw_history_and_live_points(watched_host, asgi_server, page):
    """The VM and host Summary tabs draw the metric history, then append points as the
    collector takes them, without reload (a simulated host: its metrics are simulated)."""
    import time

    from metrics.collector import collect_host
    from vms.models import VirtualMachine

    vm = (
        VirtualMachine.objects.filter(host=watched_host, state="running", is_template=False)
        .order_by("name")
        .first()
    )
    now = time.time()
    for offset in (40, 30, 20, 10):  # a few rounds of history, 10 s apart
        in_thread(lambda offset=offset: collect_host(watched_host, now=now - offset))
    base = asgi_server
    log_in(page, base)

    page.goto(f"{base}/vms/{vm.pk}/")
    wait_live(page)
    charts = page.locator("[data-metrics]")
    expect(charts).to_be_visible(timeout=10_000)
    expect(charts.locator("[data-metrics-simulated]")).to_be_visible()
    page.wait_for_function(
        "() => Number(document.querySelector('[data-metrics]').dataset.points || 0) > 0"
    )
    expect(charts.locator("canvas").first).to_be_visible()
    page.wait_for_function("() => Paddock.live.keepAll === true")  # subscribed to the VM's metrics
    in_thread(lambda: collect_host(watched_host, now=time.time()))
    page.wait_for_function(
        "() => Number(document.querySelector('[data-metrics]').dataset.livePoints || 0) > 0",
        timeout=10_000,
    )
    shot(page, "live-vm-charts")

    page.goto(f"{base}/hosts/{watched_host.pk}/")
    expect(page.locator("[data-metrics]")).to_be_visible(timeout=10_000)
    page.wait_for_function(
        "() => Number(document.querySelector('[data-metrics]').dataset.points || 0) > 0"
    )
    shot(page, "live-host-charts")
