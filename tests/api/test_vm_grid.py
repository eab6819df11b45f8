"""The VM grid's API: ?ordering= on every sortable column (with the cursor pagination), the
bulk actions (one task per VM, refusals per VM, tenant isolation), the notes field, and the
live columns the metrics collector and the sync write to the VM rows."""

from __future__ import annotations

from datetime import timedelta

import libvirt
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hosts.driver import stats
from hosts.driver.connection import get_connection
from hosts.driver.errors import HostCallTimeout
from metrics.collector import collect_host, write_live_columns
from metrics.values import Round
from panel.models import Task
from vms.choices import VMState
from vms.filtersets import ORDERINGS
from vms.models import VirtualMachine
from vms.services import NOTES_MAX_LENGTH
from vms.sync import sync_domains

pytestmark = pytest.mark.django_db

# Each ?ordering= name and how to read its sort key from an API row (nulls as the API sorts them).
FAR = "9999-12-31T00:00:00Z"
KEYS = {
    "name": lambda r: r["name"],
    "state": lambda r: r["state"],
    "host": lambda r: r["host"]["name"],
    "tenant": lambda r: r["tenant"]["name"],
    "vcpus": lambda r: r["vcpus"],
    "memory_mib": lambda r: r["memory_mib"],
    "created": lambda r: r["created"],
    "cpu_percent": lambda r: -1.0 if r["cpu_percent"] is None else r["cpu_percent"],
    "memory_percent": lambda r: -1.0 if r["memory_percent"] is None else r["memory_percent"],
    "started_at": lambda r: r["started_at"] or FAR,
}


@pytest.fixture
def grid(synced_host, tenant, other_tenant):
    """The simulated host's VMs with varied live figures: acme owns the first ten by name,
    the rest stay in their tenant; running VMs get a sample and a start time."""
    now = timezone.now()
    vms = list(VirtualMachine.objects.filter(host=synced_host).order_by("name"))
    for i, vm in enumerate(vms):
        running = vm.state == VMState.RUNNING
        VirtualMachine.objects.filter(pk=vm.pk).update(
            tenant=tenant if i < 10 else vm.tenant,
            cpu_percent=(i * 37 % 100) / 1.0 if running else None,
            memory_percent=(i * 53 % 100) / 1.0 if running else None,
            started_at=now - timedelta(minutes=i * 7 % 50) if running else None,
            vcpus=1 + i % 4,
            memory_mib=256 * (1 + i % 3),
        )
    return {"host": synced_host, "acme": tenant, "globex": other_tenant, "vms": vms}


def _walk(client, query: str, limit: int = 7) -> list[dict]:
    """Every row of the list, page by page through the cursor."""
    rows, url = [], f"/api/vms/?{query}&cursor=&limit={limit}"
    for _ in range(100):
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        rows += body["results"]
        if not body["next"]:
            return rows
        url = body["next"]
    raise AssertionError("the cursor never ended")


@pytest.mark.parametrize("field", sorted(ORDERINGS))
@pytest.mark.parametrize("desc", [False, True], ids=["asc", "desc"])
def test_ordering_sorts_every_field_and_the_cursor_walks_it(api, admin_user, grid, field, desc):
    client = api.as_user(admin_user)
    ordering = f"-{field}" if desc else field
    rows = _walk(client, f"ordering={ordering}")
    everything = set(VirtualMachine.objects.filter(gone=False).values_list("pk", flat=True))
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) and set(ids) == everything  # nothing skipped or repeated
    keys = [KEYS[field](r) for r in rows]
    assert keys == sorted(keys, reverse=desc)
    # The offset pages sort the same way.
    first = client.get(f"/api/vms/?ordering={ordering}&limit=5").json()["results"]
    assert [r["id"] for r in first] == ids[:5]


def test_ordering_by_live_figures_is_not_by_name(api, admin_user, grid):
    client = api.as_user(admin_user)
    by_cpu = [
        r["name"] for r in client.get("/api/vms/?ordering=-cpu_percent&limit=50").json()["results"]
    ]
    by_name = [r["name"] for r in client.get("/api/vms/?ordering=name&limit=50").json()["results"]]
    assert by_cpu != by_name and sorted(by_cpu) == sorted(by_name)


@pytest.mark.parametrize("bad", ["bogus", "-uuid", "name,definition", "cpu_percent;drop"])
def test_unknown_ordering_is_a_400_naming_the_field(api, admin_user, grid, bad):
    response = api.as_user(admin_user).get(f"/api/vms/?ordering={bad}")
    assert response.status_code == 400
    assert "ordering" in response.json()
    assert "Unknown field" in response.json()["ordering"][0]


def test_the_ui_list_sorts_by_the_same_parameter(client, admin_user, grid):
    client.force_login(admin_user)
    response = client.get("/vms/?ordering=-memory_mib&state=running")
    assert response.status_code == 200
    shown = [vm.memory_mib for vm in response.context["page"].object_list]
    assert shown == sorted(shown, reverse=True) and shown
    # The header links keep the filters and flip the direction of the sorted column.
    column = response.context["columns"]["memory_mib"]
    assert column["sorted"] == "desc" and "state=running" in column["url"]
    assert "ordering=memory_mib" in column["url"]
    bad = client.get("/vms/?ordering=nonsense")
    assert bad.status_code == 200 and b"Unknown field" in bad.content


# --- notes ----------------------------------------------------------------------------------


def test_notes_are_kept_and_bounded(api, admin_user, grid):
    client = api.as_user(admin_user)
    vm = grid["vms"][0]
    text = "# Runbook\n\n* restart `nginx` first\n" + "x" * 100
    response = client.patch(f"/api/vms/{vm.pk}/", {"notes": text}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["notes"] == text
    assert VirtualMachine.objects.get(pk=vm.pk).notes == text
    listed = client.get(f"/api/vms/?name={vm.name}").json()["results"][0]
    assert listed["notes"] == text
    too_long = client.patch(
        f"/api/vms/{vm.pk}/", {"notes": "y" * (NOTES_MAX_LENGTH + 1)}, format="json"
    )
    assert too_long.status_code == 400 and "notes" in too_long.json()
    assert VirtualMachine.objects.get(pk=vm.pk).notes == text
    exactly = client.patch(f"/api/vms/{vm.pk}/", {"notes": "z" * NOTES_MAX_LENGTH}, format="json")
    assert exactly.status_code == 200


# --- bulk -----------------------------------------------------------------------------------


def _acme(grid, state):
    return [vm for vm in VirtualMachine.objects.filter(tenant=grid["acme"], state=state)]


def test_bulk_start_gives_one_task_per_vm_and_refuses_the_rest_per_vm(
    api, grid, make_member, run_tasks
):
    operator = make_member(grid["acme"], "operator")
    stopped = _acme(grid, VMState.SHUTOFF)
    running = _acme(grid, VMState.RUNNING)
    assert len(stopped) >= 2 and running
    globex_vm = VirtualMachine.objects.exclude(tenant=grid["acme"]).first()
    ids = [stopped[0].pk, stopped[1].pk, running[0].pk, globex_vm.pk, 987654321]
    response = api.as_user(operator).post(
        "/api/vms/bulk/", {"action": "start", "ids": ids}, format="json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["action"] == "start"
    assert [t["vm"]["id"] for t in body["tasks"]] == [stopped[0].pk, stopped[1].pk]
    assert all(t["task"]["kind"] == "vm.power" for t in body["tasks"])
    refused = {r["id"]: r for r in body["refused"]}
    assert set(refused) == {running[0].pk, globex_vm.pk, 987654321}
    assert "running" in refused[running[0].pk]["detail"]
    # Another tenant's VM is refused exactly like one that does not exist: no name, same words.
    assert refused[globex_vm.pk]["vm"] is None and refused[987654321]["vm"] is None
    assert refused[globex_vm.pk]["detail"] == refused[987654321]["detail"]
    assert Task.objects.filter(kind="vm.power").count() == 2
    run_tasks()
    states = VirtualMachine.objects.filter(pk__in=[stopped[0].pk, stopped[1].pk])
    assert set(states.values_list("state", flat=True)) == {VMState.RUNNING}


def test_bulk_refuses_what_the_role_may_not_do(api, grid, make_member):
    viewer = make_member(grid["acme"], "viewer")
    member = make_member(grid["acme"], "member")
    running = _acme(grid, VMState.RUNNING)[0]
    body = (
        api.as_user(viewer)
        .post("/api/vms/bulk/", {"action": "stop", "ids": [running.pk]}, format="json")
        .json()
    )
    assert body["tasks"] == [] and "may not" in body["refused"][0]["detail"]
    assert body["refused"][0]["vm"]["name"] == running.name  # the viewer sees it
    # A member may power but not delete.
    body = (
        api.as_user(member)
        .post("/api/vms/bulk/", {"action": "delete", "ids": [running.pk]}, format="json")
        .json()
    )
    assert body["tasks"] == [] and "may not delete" in body["refused"][0]["detail"]
    assert not Task.objects.filter(kind__startswith="vm.").exists()


def test_bulk_refuses_a_vm_a_task_holds(api, admin_user, grid):
    client = api.as_user(admin_user)
    vm = _acme(grid, VMState.RUNNING)[0]
    first = client.post("/api/vms/bulk/", {"action": "shutdown", "ids": [vm.pk]}, format="json")
    assert len(first.json()["tasks"]) == 1
    again = client.post("/api/vms/bulk/", {"action": "delete", "ids": [vm.pk]}, format="json")
    assert again.status_code == 202
    assert again.json()["tasks"] == [] and "busy" in again.json()["refused"][0]["detail"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"action": "reboot", "ids": [1]}, "action"),
        ({"action": "start", "ids": []}, "ids"),
        ({"action": "start", "ids": ["x"]}, "ids"),
        ({"action": "start", "ids": [2**70]}, "ids"),
        ({"action": "start", "ids": list(range(1, 600))}, "ids"),
        ({"action": "start"}, "ids"),
    ],
)
def test_bulk_bad_input_is_a_400_with_the_field(api, admin_user, grid, body, field):
    response = api.as_user(admin_user).post("/api/vms/bulk/", body, format="json")
    assert response.status_code == 400 and field in response.json()


# --- live columns: the collector's one update, started_at, guest-agent addresses ---------


def _collector_queries(host) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as ctx:
        collect_host(host, publish=False)
    updates = [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].startswith("UPDATE") and "vms_virtualmachine" in q["sql"]
    ]
    return len(ctx.captured_queries), len(updates)


def test_collector_writes_every_running_vm_in_one_update(synced_host):
    vms = VirtualMachine.objects.filter(host=synced_host, gone=False)
    running = list(vms.filter(state=VMState.RUNNING).values_list("pk", flat=True))
    assert len(running) > 4
    # Few running VMs, then every one of them: the same queries, one UPDATE of the VM rows.
    collect_host(synced_host, publish=False)  # the metric store reads each VM's ring once
    vms.exclude(pk__in=running[:2]).filter(state=VMState.RUNNING).update(state=VMState.PAUSED)
    few, few_updates = _collector_queries(synced_host)
    VirtualMachine.objects.filter(pk__in=running).update(state=VMState.RUNNING)
    many, many_updates = _collector_queries(synced_host)
    assert few_updates == many_updates == 1
    assert few == many
    rows = VirtualMachine.objects.filter(pk__in=running)
    assert all(0 <= vm.cpu_percent <= 100 for vm in rows)
    assert all(0 < vm.memory_percent <= 100 for vm in rows)
    assert all(vm.sampled_at is not None for vm in rows)
    stopped = VirtualMachine.objects.filter(host=synced_host).exclude(state=VMState.RUNNING)
    assert not stopped.exclude(cpu_percent=None).exists()


def test_live_columns_leave_a_vm_that_stopped_meanwhile_alone(synced_host):
    vm = VirtualMachine.objects.filter(host=synced_host, state=VMState.RUNNING).first()
    VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.SHUTOFF)
    rnd = Round(host_id=synced_host.pk, ts=1_700_000_000, simulated=True)
    rnd.vms[vm.pk] = {"cpu_percent": 50.0, "memory_used_bytes": 1, "memory_balloon_bytes": 2}
    assert write_live_columns(rnd) == 0
    assert VirtualMachine.objects.get(pk=vm.pk).cpu_percent is None


def test_written_addresses_come_from_the_round(synced_host):
    vm = VirtualMachine.objects.filter(host=synced_host, state=VMState.RUNNING).first()
    rnd = Round(host_id=synced_host.pk, ts=1_700_000_000, simulated=False)
    rnd.vms[vm.pk] = {"cpu_percent": 12.5, "memory_used_bytes": 256, "memory_balloon_bytes": 1024}
    rnd.extra["ip_addresses"] = {vm.pk: ["192.168.122.45"]}
    assert write_live_columns(rnd) == 1
    vm.refresh_from_db()
    assert (vm.cpu_percent, vm.memory_percent, vm.ip_addresses) == (12.5, 25.0, ["192.168.122.45"])
    assert vm.sampled_at.timestamp() == 1_700_000_000


def test_started_at_is_set_when_running_and_cleared_when_stopped(synced_host):
    conn = get_connection(synced_host)
    vm = VirtualMachine.objects.filter(host=synced_host, state=VMState.SHUTOFF).first()
    assert vm.started_at is None
    dom = conn.lookupByUUIDString(str(vm.uuid))
    before = timezone.now()
    dom.create()
    sync_domains(synced_host, conn)
    vm.refresh_from_db()
    assert vm.state == VMState.RUNNING and vm.started_at >= before
    started = vm.started_at
    # Seen running again: the start time stays (uptime grows).
    VirtualMachine.objects.filter(pk=vm.pk).update(cpu_percent=40.0, ip_addresses=["10.0.0.9"])
    sync_domains(synced_host, conn)
    vm.refresh_from_db()
    assert vm.started_at == started and vm.cpu_percent == 40.0
    dom.destroy()
    sync_domains(synced_host, conn)
    vm.refresh_from_db()
    assert vm.state == VMState.SHUTOFF and vm.started_at is None
    assert vm.cpu_percent is None and vm.memory_percent is None and vm.ip_addresses == []


def test_a_vm_first_seen_running_gets_a_start_time(synced_host):
    running = VirtualMachine.objects.filter(host=synced_host, state=VMState.RUNNING)
    assert running.exists() and not running.filter(started_at=None).exists()


# The answer libvirt-python gives for interfaceAddresses(VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT)
# of a Linux guest running qemu-guest-agent (recorded from libvirt 9 on QEMU: the agent's
# guest-network-get-interfaces, as libvirt turns it into a dict).
AGENT_REPLY = {
    "lo": {
        "hwaddr": "00:00:00:00:00:00",
        "addrs": [
            {"type": libvirt.VIR_IP_ADDR_TYPE_IPV4, "addr": "127.0.0.1", "prefix": 8},
            {"type": libvirt.VIR_IP_ADDR_TYPE_IPV6, "addr": "::1", "prefix": 128},
        ],
    },
    "eth0": {
        "hwaddr": "52:54:00:4a:1b:7c",
        "addrs": [
            {"type": libvirt.VIR_IP_ADDR_TYPE_IPV4, "addr": "192.168.122.45", "prefix": 24},
            {"type": libvirt.VIR_IP_ADDR_TYPE_IPV6, "addr": "fd00:122::45", "prefix": 64},
            {
                "type": libvirt.VIR_IP_ADDR_TYPE_IPV6,
                "addr": "fe80::5054:ff:fe4a:1b7c",
                "prefix": 64,
            },
        ],
    },
    "docker0": {
        "hwaddr": "02:42:ac:11:00:01",
        "addrs": [{"type": libvirt.VIR_IP_ADDR_TYPE_IPV4, "addr": "172.17.0.1", "prefix": 16}],
    },
}


class _Domain:
    def __init__(self, reply):
        self.reply = reply
        self.asked = []

    def interfaceAddresses(self, source, flags=0):
        self.asked.append(source)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


class _Conn:
    def __init__(self, domains):
        self.domains = domains
        self.looked_up = []

    def lookupByUUIDString(self, uuid):
        self.looked_up.append(uuid)
        return self.domains[uuid]


def _no_agent() -> libvirt.libvirtError:
    return libvirt.libvirtError("Guest agent is not responding: QEMU guest agent is not connected")


def test_guest_addresses_read_the_agent_and_leave_out_loopback():
    dom = _Domain(AGENT_REPLY)
    got = stats.guest_addresses(_Conn({"a-1": dom}), ["a-1"])
    assert got == {"a1": ["172.17.0.1", "192.168.122.45", "fd00:122::45"]}
    assert dom.asked == [libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT]


def test_an_absent_agent_gives_no_addresses_and_the_round_goes_on():
    conn = _Conn({"a": _Domain(_no_agent()), "b": _Domain(AGENT_REPLY), "c": _Domain({})})
    got = stats.guest_addresses(conn, ["a", "b", "c"])
    assert got["a"] == [] and got["c"] == [] and "192.168.122.45" in got["b"]


def test_a_host_past_its_deadline_is_not_asked_again_this_round():
    conn = _Conn(
        {"a": _Domain(HostCallTimeout("interfaceAddresses", 30, "h")), "b": _Domain(AGENT_REPLY)}
    )
    assert stats.guest_addresses(conn, ["a", "b"]) == {"a": [], "b": []}
    assert conn.looked_up == ["a"]


def test_the_real_collector_path_reads_the_agents_of_vms_with_its_channel(synced_host, monkeypatch):
    """The round a real host gets (``_collect_real``), on the test driver's libvirt API, which
    answers interfaceAddresses for any running domain: only the VM whose definition has the
    agent channel is asked, and its addresses reach its row. (The test driver has no host CPU
    or memory counters: those two calls answer empty here.)"""
    from metrics.collector import _collect_real

    monkeypatch.setattr(stats, "host_cpu", lambda conn: {})
    monkeypatch.setattr(stats, "host_memory", lambda conn: {})

    conn = get_connection(synced_host)
    running = list(
        VirtualMachine.objects.filter(host=synced_host, state=VMState.RUNNING).order_by("name")
    )
    with_agent, without = running[0], running[1]
    channel = "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
    VirtualMachine.objects.filter(pk=with_agent.pk).update(
        definition=with_agent.definition.replace("</devices>", channel + "</devices>")
    )
    rnd = _collect_real(synced_host, conn, 1_700_000_000.0)
    assert write_live_columns(rnd) == len(rnd.vms) > 1
    with_agent.refresh_from_db()
    without.refresh_from_db()
    expected = stats.guest_addresses(conn, [str(with_agent.uuid)])[
        str(with_agent.uuid).replace("-", "")
    ]
    assert expected and with_agent.ip_addresses == expected
    assert without.ip_addresses == [] and without.sampled_at is not None


def test_a_stopped_domain_answers_no_addresses_through_the_driver(synced_host):
    conn = get_connection(synced_host)
    off = VirtualMachine.objects.filter(host=synced_host, state=VMState.SHUTOFF).first()
    key = str(off.uuid).replace("-", "")
    assert stats.guest_addresses(conn, [str(off.uuid)]) == {key: []}
