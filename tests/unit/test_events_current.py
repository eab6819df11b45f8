"""A page asks the events socket what its objects are now (``{"current": ...}``) when it
connects or reconnects, and a subscription answers with its objects' present state too: what
changed before the socket was there is never missed. Only what the user may see is answered.

The real consumer on the in-memory channel layer, over the simulated host's inventory.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from channels.layers import channel_layers

from panel.consumers import EventsConsumer
from panel.models import Task
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def _open(user) -> ApplicationCommunicator:
    scope = {"type": "websocket", "path": "/ws/events/", "headers": [], "user": user}
    comm = ApplicationCommunicator(EventsConsumer.as_asgi(), scope)
    await comm.send_input({"type": "websocket.connect"})
    assert (await comm.receive_output(2))["type"] == "websocket.accept"
    assert json.loads((await comm.receive_output(2))["text"])["type"] == "hello"
    return comm


async def _ask(comm, message: dict, until: str) -> list[dict]:
    await comm.send_input({"type": "websocket.receive", "text": json.dumps(message)})
    got = []
    while True:
        reply = json.loads((await comm.receive_output(2))["text"])
        got.append(reply)
        if reply["type"] in (until, "error"):
            return got


def _close(comm):
    async def close():
        await comm.send_input({"type": "websocket.disconnect", "code": 1000})
        await comm.wait(2)

    return close()


def test_current_answers_the_present_state_of_what_the_user_may_see(
    synced_host, tenant, other_tenant, make_member
):
    vms = list(VirtualMachine.objects.filter(host=synced_host).order_by("name")[:3])
    mine, theirs = vms[0], vms[1]
    VirtualMachine.objects.filter(pk=mine.pk).update(tenant=tenant, state="paused")
    VirtualMachine.objects.filter(pk=theirs.pk).update(tenant=other_tenant)
    task = Task.objects.create(
        kind="vm.power", tenant=tenant, vm=mine, state="running", progress=40
    )
    foreign = Task.objects.create(kind="vm.power", tenant=other_tenant, vm=theirs)
    viewer = make_member(tenant, "viewer")

    async def scenario():
        comm = await _open(viewer)
        ask = {
            "vms": [mine.pk, theirs.pk],
            "hosts": [synced_host.pk],
            "tasks": [task.pk, foreign.pk],
        }
        got = await _ask(comm, {"current": ask}, until="current")
        await _close(comm)
        return got

    got = async_to_sync(scenario)()
    *states, done = got
    assert done == {"type": "current", "count": 2}
    by_type = {m["type"]: m for m in states}
    assert set(by_type) == {"vm.updated", "task.updated"}  # a host is for platform admins
    vm = by_type["vm.updated"]
    assert (vm["id"], vm["state"], vm["current"]) == (mine.pk, "paused", True)
    t = by_type["task.updated"]
    assert (t["id"], t["state"], t["progress"], t["current"]) == (task.pk, "running", 40, True)


def test_a_subscription_is_answered_with_its_objects_present_state(synced_host, admin_user):
    vm = VirtualMachine.objects.filter(host=synced_host).order_by("name").first()
    VirtualMachine.objects.filter(pk=vm.pk).update(state="shutoff")

    async def scenario():
        comm = await _open(admin_user)
        await comm.send_input(
            {
                "type": "websocket.receive",
                "text": json.dumps({"subscribe": {"vms": [vm.pk], "hosts": [synced_host.pk]}}),
            }
        )
        got = [json.loads((await comm.receive_output(2))["text"]) for _ in range(3)]
        await _close(comm)
        return got

    reply, *states = async_to_sync(scenario)()
    assert reply["type"] == "subscribed"
    assert {(m["type"], m["id"]) for m in states} == {
        ("vm.updated", vm.pk),
        ("host.updated", synced_host.pk),
    }
    assert all(m["current"] for m in states)


@pytest.mark.parametrize(
    "bad", [[1, 2], {"vms": ["x"]}, {"planets": [1]}, {"vms": list(range(1, 1100))}]
)
def test_a_bad_current_request_gets_an_error_and_the_socket_stays(admin_user, bad):
    async def scenario():
        comm = await _open(admin_user)
        got = await _ask(comm, {"current": bad}, until="current")
        again = await _ask(comm, {"current": {"vms": []}}, until="current")
        await _close(comm)
        return got, again

    got, again = async_to_sync(scenario)()
    assert got[-1]["type"] == "error" and "current takes" in got[-1]["error"]
    assert again == [{"type": "current", "count": 0}]
