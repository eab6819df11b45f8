"""Fan-out cost: one VM event is one ``group_send`` per group it goes to, however many clients
are connected, and clients in unrelated groups receive nothing.

Runs the real consumer (``/ws/events/`` through ``paddock.asgi.application``) on the in-memory
channel layer, with users whose tenant roles are already known (no database).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.layers import channel_layers, get_channel_layer
from django.contrib.auth import get_user_model

from panel import events
from panel.choices import Role
from panel.consumers import EventsConsumer

User = get_user_model()


class CountingLayer:
    """Wraps a channel layer and counts the ``group_send`` calls made through it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.group_sends: list[str] = []

    async def group_send(self, group, message):
        self.group_sends.append(group)
        await self.inner.group_send(group, message)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def memory_layer(settings, monkeypatch):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    counting = CountingLayer(get_channel_layer())
    monkeypatch.setattr(events, "get_channel_layer", lambda: counting)
    yield counting
    channel_layers.backends.clear()


def member_of(tenant_id: int, name: str):
    """A user who is a viewer of one tenant (the role cache ``panel.tenancy`` reads)."""
    user = User(username=name, is_active=True)
    user._paddock_roles = {tenant_id: Role.VIEWER}
    return user


def client(user) -> ApplicationCommunicator:
    scope = {"type": "websocket", "path": "/ws/events/", "headers": [], "user": user}
    return ApplicationCommunicator(EventsConsumer.as_asgi(), scope)


async def open_client(user) -> ApplicationCommunicator:
    comm = client(user)
    await comm.send_input({"type": "websocket.connect"})
    assert (await comm.receive_output(1))["type"] == "websocket.accept"
    hello = json.loads((await comm.receive_output(1))["text"])
    assert hello["type"] == "hello"
    return comm


@pytest.mark.django_db
@pytest.mark.parametrize("bystanders", [1, 50, 300])
def test_one_vm_event_costs_constant_group_sends(
    memory_layer, bystanders, django_capture_on_commit_callbacks
):
    vm = SimpleNamespace(
        pk=7, uuid="00000000-0000-0000-0000-000000000007", name="web-1", state="running",
        state_reason="1", desired_state="running", lifecycle="ready", gone=False, host_id=1,
        tenant_id=1, lock_id=None,
    )  # fmt: skip

    def publish_vm_event() -> None:
        with django_capture_on_commit_callbacks(execute=True):  # as if the change committed
            events.vm_changed(vm, event="started")

    async def scenario():
        watcher = await open_client(member_of(1, "tenant-1-viewer"))
        others = [await open_client(member_of(100 + i, f"viewer-{i}")) for i in range(bystanders)]
        memory_layer.group_sends.clear()
        await sync_to_async(publish_vm_event)()
        # admin, tenant.1 and vm.7: three group_sends, not one per connected client.
        assert sorted(memory_layer.group_sends) == ["admin", "tenant.1", "vm.7"]
        message = json.loads((await watcher.receive_output(1))["text"])
        assert message["type"] == "vm.updated" and message["id"] == 7
        for other in others:
            assert await other.receive_nothing(timeout=0.001, interval=0.001)
        for comm in [watcher, *others]:
            await comm.send_input({"type": "websocket.disconnect", "code": 1000})
            await comm.wait(1)

    async_to_sync(scenario)()
