"""Live events end to end: a host watcher on the real libvirtd, the Redis channel layer and
``/ws/events/`` through ``paddock.asgi.application``.

Out-of-band changes (made through a separate libvirt connection, as ``virsh`` would) must reach
the inventory and a websocket client within a second; clients only ever get what they may see.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import libvirt
import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings
from django.test import Client

from hosts.watcher import HostWatcher, wait_until
from paddock.asgi import application
from panel import events
from panel.choices import Role
from panel.models import ApiToken
from vms.models import VirtualMachine

from .guests import define

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The panel's own origin: a session socket must come from it (panel.wsguard).
HOST = (b"host", b"localhost")
ORIGIN = (b"origin", b"http://localhost")
LATENCY_BUDGET = 1.0


class WebsocketCommunicator(ApplicationCommunicator):
    """A websocket client for an ASGI application, in process (the subset of Channels'
    ``WebsocketCommunicator`` these tests use; ``channels.testing`` needs daphne)."""

    def __init__(self, app, path: str, headers=None) -> None:
        scope = {
            "type": "websocket",
            "path": path,
            "query_string": b"",
            "headers": headers or [],
            "subprotocols": [],
        }
        super().__init__(app, scope)

    async def connect(self, timeout: float = 1) -> tuple[bool, int | None]:
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        assert response["type"] == "websocket.accept", response
        return True, None

    async def send_json_to(self, data) -> None:
        await self.send_input({"type": "websocket.receive", "text": json.dumps(data)})

    async def receive_json_from(self, timeout: float = 1):
        response = await self.receive_output(timeout)
        assert response["type"] == "websocket.send", response
        return json.loads(response["text"])

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        if self.future.done():
            return  # already ended (closed by the server, or a failed assertion cancelled it)
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)


@pytest.fixture(autouse=True)
def redis_layer(settings):
    layer = settings.CHANNEL_LAYERS["default"]
    if "redis" not in layer["BACKEND"].lower():
        pytest.skip("needs the Redis channel layer (REDIS_URL)")
    # A prefix of our own: other runs publishing to the same Redis database use the same group
    # names (tenant.1, admin...) and must not reach these clients. The socket timeout must
    # exceed channels_redis's 5 s blocking receive, or an idle consumer dies with redis-py's
    # default 5 s read timeout ("Timeout reading from ...").
    config = layer.get("CONFIG", {})
    hosts = [
        {"address": h, "socket_timeout": 15} if isinstance(h, str) else h
        for h in config.get("hosts", [])
    ]
    settings.CHANNEL_LAYERS = {
        "default": {
            **layer,
            "CONFIG": {**config, "hosts": hosts, "prefix": f"paddock-test-{os.getpid()}"},
        }
    }
    channel_layers.backends.clear()  # a fresh layer: no pools bound to an old event loop
    async_to_sync(get_channel_layer().flush)()
    yield
    async_to_sync(get_channel_layer().flush)()
    channel_layers.backends.clear()


def start_watcher(host) -> HostWatcher:
    watcher = HostWatcher(host.pk).start()
    assert watcher.ready.wait(15), watcher.last_error
    # The first full reconcile runs right after connecting: let it finish.
    assert wait_until(lambda: watcher.stats["reconciles"] >= 1, 30)
    return watcher


@pytest.fixture
def watcher(lab):
    w = start_watcher(lab["host"])
    yield w
    w.stop()


def session_headers(user) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return [HOST, ORIGIN, (b"cookie", cookie.encode())]


async def connect(headers) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, "/ws/events/", headers=headers)
    connected, _ = await comm.connect(timeout=5)
    assert connected
    hello = await comm.receive_json_from(timeout=15)
    assert hello["type"] == "hello", hello
    return comm


async def next_event(comm, predicate, timeout: float = 15.0) -> tuple[dict, float]:
    """The first message matching ``predicate`` and the monotonic time it arrived."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no matching event")
        message = await comm.receive_json_from(timeout=remaining)
        if predicate(message):
            return message, time.monotonic()


async def drain(comm, seconds: float) -> list[dict]:
    """Everything the client gets within ``seconds`` (without timing out the application,
    which ``receive_output`` would cancel)."""
    got = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if not await comm.receive_nothing(timeout=min(remaining, 0.1), interval=0.01):
            got.append(await comm.receive_json_from(timeout=1))
    return got


def vm_event(vm_id: int, state: str | None = None):
    def match(m: dict) -> bool:
        return (
            m.get("type") == "vm.updated"
            and m["id"] == vm_id
            and (state is None or m["state"] == state)
        )

    return match


def state_of(pk: int) -> str:
    return VirtualMachine.objects.get(pk=pk).state


def imported(lab, dom) -> VirtualMachine:
    """The VM row the watcher made for a domain defined out of band."""
    uuid = dom.UUIDString()
    assert wait_until(
        lambda: VirtualMachine.objects.filter(host=lab["host"], uuid=uuid).exists(), 10
    ), "the defined domain was not imported"
    return VirtualMachine.objects.get(host=lab["host"], uuid=uuid)


def test_out_of_band_changes_reach_inventory_and_websocket(lab, watcher):
    conn = lab["conn"]  # a separate connection: what virsh would do
    dom = define(conn, lab["prefix"] + "oob")
    vm = imported(lab, dom)
    assert vm.state == "shutoff"
    latencies = {}

    headers = session_headers(lab["admin"])

    async def scenario():
        comm = await connect(headers)
        try:
            for action, state in ((dom.create, "running"), (dom.destroy, "shutoff")):
                await asyncio.to_thread(action)
                returned = time.monotonic()
                message, arrived = await next_event(comm, vm_event(vm.pk, state))
                latencies[state] = arrived - returned
                assert message["host"] == lab["host"].pk
                assert message["tenant"] == vm.tenant_id
                assert message["lifecycle"] == vm.lifecycle
        finally:
            await comm.disconnect()

    async_to_sync(scenario)()
    vm.refresh_from_db()
    # Observed and desired: a change made on the host is never undone.
    assert (vm.state, vm.desired_state) == ("shutoff", "shutoff")
    print(f"event-to-websocket latency: {latencies}")
    assert max(latencies.values()) < LATENCY_BUDGET, latencies


def test_tenant_sees_only_its_vms(lab, watcher, make_member, other_tenant):
    conn = lab["conn"]
    mine = define(conn, lab["prefix"] + "mine")
    theirs = define(conn, lab["prefix"] + "theirs")
    vm_mine, vm_theirs = imported(lab, mine), imported(lab, theirs)
    VirtualMachine.objects.filter(pk=vm_mine.pk).update(tenant=lab["tenant"])
    VirtualMachine.objects.filter(pk=vm_theirs.pk).update(tenant=other_tenant)
    viewer = make_member(lab["tenant"], Role.VIEWER, "events-viewer")

    headers = session_headers(viewer)

    async def scenario():
        comm = await connect(headers)
        try:
            await asyncio.to_thread(theirs.create)
            await asyncio.to_thread(mine.create)
            await next_event(comm, vm_event(vm_mine.pk, "running"))
            # Their event was published before mine: had it reached this client, it would
            # have come first.
            for m in await drain(comm, 0.5):
                assert m.get("id") != vm_theirs.pk, m

            # Another tenant's VM cannot be subscribed to: answered as not found, no events.
            await comm.send_json_to({"subscribe": {"vms": [vm_theirs.pk]}})
            reply = await comm.receive_json_from(timeout=15)
            assert reply["type"] == "subscribed" and reply["vms"] == []
            assert reply["not_found"] == {"vms": [vm_theirs.pk]}
            await asyncio.to_thread(theirs.destroy)
            await asyncio.to_thread(mine.destroy)  # narrowed to nothing: not this one either
            for pk in (vm_theirs.pk, vm_mine.pk):  # the watcher did see both
                assert await asyncio.to_thread(
                    wait_until, lambda pk=pk: state_of(pk) == "shutoff", 15
                )
            assert await drain(comm, 0.5) == []

            # Narrowed to its own VM: that VM's events only.
            await comm.send_json_to({"subscribe": {"vms": [vm_mine.pk, vm_theirs.pk]}})
            reply = await comm.receive_json_from(timeout=15)
            assert reply["vms"] == [vm_mine.pk] and reply["not_found"] == {"vms": [vm_theirs.pk]}
            await asyncio.to_thread(theirs.create)
            await asyncio.to_thread(mine.create)
            await next_event(comm, vm_event(vm_mine.pk, "running"))
            for m in await drain(comm, 0.5):
                assert m.get("id") != vm_theirs.pk, m

            # Hosts are for platform admins only.
            await comm.send_json_to({"subscribe": {"hosts": [lab["host"].pk]}})
            reply = await comm.receive_json_from(timeout=15)
            assert reply["hosts"] == [] and reply["not_found"] == {"hosts": [lab["host"].pk]}

            # Back to everything it may see.
            await comm.send_json_to({"subscribe": None})
            reply = await comm.receive_json_from(timeout=15)
            assert reply == {"type": "subscribed", "scope": "all"}
            await asyncio.to_thread(mine.destroy)
            await next_event(comm, vm_event(vm_mine.pk, "shutoff"))
        finally:
            await comm.disconnect()

    async_to_sync(scenario)()


def test_token_client_and_anonymous(synced_host, make_member, tenant, other_tenant):
    vm, other = VirtualMachine.objects.filter(host=synced_host).order_by("pk")[:2]
    VirtualMachine.objects.filter(pk=vm.pk).update(tenant=tenant)
    VirtualMachine.objects.filter(pk=other.pk).update(tenant=other_tenant)
    vm.refresh_from_db()
    other.refresh_from_db()
    member = make_member(tenant, Role.MEMBER, "events-bot")
    _token, raw = ApiToken.issue(user=member, name="events")

    async def scenario():
        comm = await connect([ORIGIN, (b"authorization", f"Token {raw}".encode())])
        try:
            # Published as the watcher does: after commit (autocommit here: at once).
            from asgiref.sync import sync_to_async

            await sync_to_async(events.vm_changed)(other, event="started")
            await sync_to_async(events.vm_changed)(vm, event="started")
            message, _ = await next_event(comm, vm_event(vm.pk))
            assert message["tenant"] == tenant.pk and message["event"] == "started"
            assert await drain(comm, 0.3) == []
        finally:
            await comm.disconnect()

        for headers in ([HOST, ORIGIN], [ORIGIN, (b"authorization", b"Token not-a-token")]):
            anonymous = WebsocketCommunicator(application, "/ws/events/", headers=headers)
            connected, _ = await anonymous.connect(timeout=5)
            assert connected  # accepted, then closed with the code
            closed = await anonymous.receive_output(timeout=5)
            assert closed == {"type": "websocket.close", "code": 4401}, closed
            await anonymous.wait()

    async_to_sync(scenario)()


def test_task_events_reach_the_task_group(synced_host, admin_user):
    from panel.models import Task

    task = Task.objects.filter(host=synced_host).order_by("pk").first()
    assert task is not None

    headers = session_headers(admin_user)

    async def scenario():
        from asgiref.sync import sync_to_async

        comm = await connect(headers)
        try:
            await comm.send_json_to({"subscribe": {"tasks": [task.pk]}})
            reply = await comm.receive_json_from(timeout=15)
            assert reply["tasks"] == [task.pk]
            # The subscription is answered with the task as it is now, then its events follow.
            current = await comm.receive_json_from(timeout=15)
            assert current["type"] == "task.updated" and current["current"] is True
            assert (current["id"], current["state"]) == (task.pk, task.state)
            await sync_to_async(events.task_log)(task, "step one", "info")
            await sync_to_async(events.task_changed)(task)
            log = await comm.receive_json_from(timeout=15)
            assert log == {"type": "task.log", "id": task.pk, "line": "step one", "level": "info"}
            updated = await comm.receive_json_from(timeout=15)
            assert updated["type"] == "task.updated" and updated["id"] == task.pk
        finally:
            await comm.disconnect()

    async_to_sync(scenario)()


def test_test_driver_host_watcher(synced_host, admin_user):
    """A test-driver host's events are those caused through this process's connection."""
    from hosts.driver.connection import get_connection

    watcher = start_watcher(synced_host)
    try:
        conn = get_connection(synced_host)
        dom = next(d for d in conn.listAllDomains() if d.isActive())
        vm = VirtualMachine.objects.get(host=synced_host, uuid=dom.UUIDString())

        headers = session_headers(admin_user)

        async def scenario():
            comm = await connect(headers)
            try:
                await asyncio.to_thread(dom.destroy)
                await next_event(comm, vm_event(vm.pk, "shutoff"))
                await asyncio.to_thread(dom.create)
                await next_event(comm, vm_event(vm.pk, "running"))
            finally:
                await comm.disconnect()

        async_to_sync(scenario)()
        vm.refresh_from_db()
        assert (vm.state, vm.desired_state) == ("running", "running")
    finally:
        watcher.stop()


def test_watcher_reconnects_and_reconciles(lab, watcher, monkeypatch):
    dom = define(lab["conn"], lab["prefix"] + "reconnect")
    vm = imported(lab, dom)
    host = lab["host"]
    real_open, refused = libvirt.open, []

    def open_(uri=None):
        if len(refused) < 2:  # the host does not answer twice: offline, backoff 1 s, 2 s
            refused.append(time.monotonic())
            libvirt.virResetLastError()  # or libvirtError reports this thread's last error
            raise libvirt.libvirtError("simulated: the host does not answer")
        return real_open(uri)

    headers = session_headers(lab["admin"])

    async def scenario():
        comm = await connect(headers)
        try:
            await comm.send_json_to({"subscribe": {"hosts": [host.pk], "vms": [vm.pk]}})
            reply = await comm.receive_json_from(timeout=15)
            assert reply["hosts"] == [host.pk] and reply["vms"] == [vm.pk]
            # The watcher's connection goes away; meanwhile the domain is started out of band.
            monkeypatch.setattr(libvirt, "open", open_)
            await asyncio.to_thread(watcher.conn.close)
            await asyncio.to_thread(dom.create)
            offline, _ = await next_event(
                comm, lambda m: m["type"] == "host.updated" and m["status"] == "offline"
            )
            assert offline["id"] == host.pk
            assert offline["last_error"] == "simulated: the host does not answer"
            # Back: a full reconcile, the host online again, the missed start in the inventory.
            seen = {"online": False, "running": False}

            def back(m: dict) -> bool:
                if m["type"] == "host.updated" and m["status"] == "online":
                    seen["online"] = True
                if vm_event(vm.pk, "running")(m):
                    seen["running"] = True
                return all(seen.values())

            await next_event(comm, back, 30)
        finally:
            await comm.disconnect()

    async_to_sync(scenario)()
    assert len(refused) == 2 and 0.8 < refused[1] - refused[0] < 1.8, refused
    assert watcher.stats["connects"] == 2 and watcher.stats["reconciles"] >= 2, watcher.stats
    host.refresh_from_db()
    vm.refresh_from_db()
    assert host.status == "online" and not host.last_error
    assert (vm.state, vm.desired_state) == ("running", "running")
    # And the new connection delivers events again.
    dom.destroy()
    assert wait_until(lambda: state_of(vm.pk) == "shutoff", 5)


def test_keep_all_adds_objects_to_the_broad_feed(synced_host, admin_user, tenant, make_member):
    """A page with charts subscribes to its VM without losing the rest of the tenant's feed."""
    from panel.models import Task

    vms = list(VirtualMachine.objects.filter(host=synced_host).order_by("pk")[:2])
    VirtualMachine.objects.filter(pk__in=[v.pk for v in vms]).update(tenant=tenant)
    member = make_member(tenant, "member")
    other_task = Task.objects.create(kind="vm.start", tenant=tenant, vm=vms[1], target="vm")
    headers = session_headers(member)

    async def scenario():
        from asgiref.sync import sync_to_async

        comm = await connect(headers)
        try:
            await comm.send_json_to({"subscribe": {"vms": [vms[0].pk]}, "keep_all": True})
            reply = await comm.receive_json_from(timeout=15)
            assert reply["scope"] == "all" and reply["keep_all"] is True
            assert reply["vms"] == [vms[0].pk]
            current = await comm.receive_json_from(timeout=15)
            assert (current["type"], current["id"], current["current"]) == (
                "vm.updated",
                vms[0].pk,
                True,
            )
            # A task of another VM of the tenant still arrives (the broad feed is kept) ...
            await sync_to_async(events.task_changed)(other_task)
            got = await comm.receive_json_from(timeout=15)
            assert got["type"] == "task.updated" and got["id"] == other_task.pk
            # ... and so do the subscribed VM's live metric points.
            await sync_to_async(events._send)(
                [f"metrics.vm.{vms[0].pk}"],
                {"type": "metrics", "object": "vm", "id": vms[0].pk, "ts": 1, "values": {}},
            )
            got = await comm.receive_json_from(timeout=15)
            assert got["type"] == "metrics" and got["id"] == vms[0].pk
        finally:
            await comm.disconnect()

    async_to_sync(scenario)()
