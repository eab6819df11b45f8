"""Live events: channel-layer messages sent only after the transaction that caused them commits.

Groups: ``tenant.<id>`` for a tenant's objects, ``admin`` for what only platform admins see,
``task.<id>`` for one task's log. Consumers subscribe browsers to the groups they may see.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def _send(groups: list[str], message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for group in groups:
        try:
            async_to_sync(layer.group_send)(group, {"type": "paddock.event", "event": message})
        except Exception:
            logger.warning("could not publish %s to %s", message.get("type"), group, exc_info=True)


def send_on_commit(groups: list[str], message: dict) -> None:
    transaction.on_commit(lambda: _send(groups, message))


def groups_for_tenant(tenant_id: int | None) -> list[str]:
    return ["admin"] + ([f"tenant.{tenant_id}"] if tenant_id else [])


def task_changed(task) -> None:
    send_on_commit(
        groups_for_tenant(task.tenant_id),
        {
            "type": "task.updated",
            "id": task.pk,
            "kind": task.kind,
            "state": task.state,
            "progress": task.progress,
            "target": task.target,
            "error": task.error,
        },
    )


def task_log(task, line: str, level: str) -> None:
    send_on_commit(
        groups_for_tenant(task.tenant_id),
        {"type": "task.log", "id": task.pk, "line": line, "level": level},
    )
