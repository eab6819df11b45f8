"""Live events: channel-layer messages sent only after the transaction that caused them commits.

Groups (see ``docs/events.md``):

* ``admin``: everything, for platform admins;
* ``tenant.<id>``: a tenant's VMs and tasks, for its members;
* ``vm.<id>``, ``host.<id>``, ``task.<id>``: one object, for clients that narrowed their
  subscription to it (``task.<id>`` also carries that task's log lines).

One event costs one ``group_send`` per group it goes to (at most three), whatever the number
of connected clients: the channel layer fans out, and the consumers join only the groups their
user may see, so nothing is filtered after delivery.
"""

from __future__ import annotations

import json
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

# The message type the consumers handle (``EventsConsumer.paddock_event``).
MESSAGE_TYPE = "paddock.event"


def layer_message(event: dict) -> dict:
    """The channel-layer message of ``event``: the event and its JSON text, encoded once here
    rather than once per connected client (``EventsConsumer.paddock_event`` sends the text)."""
    return {"type": MESSAGE_TYPE, "event": event, "text": json.dumps(event)}


async def publish(layer, groups: list[str], message: dict) -> None:
    """Send ``message`` to each group: one ``group_send`` per group."""
    packed = layer_message(message)
    for group in groups:
        try:
            await layer.group_send(group, packed)
        except Exception:
            logger.warning("could not publish %s to %s", message.get("type"), group, exc_info=True)


def _send(groups: list[str], message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        # All groups in one event-loop run: one Redis connection per event, not per group.
        async_to_sync(publish)(layer, groups, message)
    except Exception:
        logger.warning("could not publish %s", message.get("type"), exc_info=True)


def send_on_commit(groups: list[str], message: dict) -> None:
    transaction.on_commit(lambda: _send(groups, message))


def groups_for_tenant(tenant_id: int | None) -> list[str]:
    return ["admin"] + ([f"tenant.{tenant_id}"] if tenant_id else [])


def groups_for_vm(vm) -> list[str]:
    return [*groups_for_tenant(vm.tenant_id), f"vm.{vm.pk}"]


def groups_for_host(host) -> list[str]:
    return ["admin", f"host.{host.pk}"]


def groups_for_task(task) -> list[str]:
    return [*groups_for_tenant(task.tenant_id), f"task.{task.pk}"]


def vm_message(vm, **extra) -> dict:
    return {
        "type": "vm.updated",
        "id": vm.pk,
        "uuid": str(vm.uuid),
        "name": vm.name,
        "state": vm.state,
        "state_reason": vm.state_reason,
        "desired_state": vm.desired_state,
        "lifecycle": vm.lifecycle,
        "gone": vm.gone,
        "host": vm.host_id,
        "tenant": vm.tenant_id,
        "lock": vm.lock_id,  # the task holding the VM (its actions wait), or null
        **extra,
    }


def vm_changed(vm, **extra) -> None:
    """``vm.updated`` to ``admin``, ``tenant.<id>`` and ``vm.<id>`` once the change commits.

    ``extra`` adds fields, e.g. ``event="started"`` for what libvirt reported.
    """
    send_on_commit(groups_for_vm(vm), vm_message(vm, **extra))


def host_message(host, **extra) -> dict:
    return {
        "type": "host.updated",
        "id": host.pk,
        "name": host.name,
        "status": host.status,
        "last_error": host.last_error,
        **extra,
    }


def host_changed(host, **extra) -> None:
    """``host.updated`` to ``admin`` and ``host.<id>`` once the change commits."""
    send_on_commit(groups_for_host(host), host_message(host, **extra))


def task_message(task, **extra) -> dict:
    return {
        "type": "task.updated",
        "id": task.pk,
        "kind": task.kind,
        "state": task.state,
        "progress": task.progress,
        "target": task.target,
        "error": task.error,
        **extra,
    }


def task_changed(task) -> None:
    send_on_commit(groups_for_task(task), task_message(task))


def task_log(task, line: str, level: str) -> None:
    send_on_commit(
        groups_for_task(task),
        {"type": "task.log", "id": task.pk, "line": line, "level": level},
    )
