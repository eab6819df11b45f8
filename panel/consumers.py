"""``/ws/events/``: live events for browsers (session cookie) and automation (API token).

On connect a client joins the groups of what its user may see: platform admins ``admin``,
everyone else ``tenant.<id>`` for each membership. A client may narrow that to single objects
with ``{"subscribe": {"vms": [...], "hosts": [...], "tasks": [...]}}`` (only the ones its user
may see are joined) and widen it again with ``{"subscribe": null}``. Scoping is done by group
membership: a message reaches only the consumers in its groups, nothing is filtered after
delivery. The protocol is described in ``docs/events.md``.

Which VMs and hosts a user may follow, the apps that own them say
(``panel.registry.subscriptions``); tasks are the core's own.
"""

from __future__ import annotations

import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from .events import MESSAGE_TYPE, task_message
from .models import ApiToken
from .registry import subscriptions
from .selectors import tasks_for
from .tenancy import Action, is_platform_admin, tenant_ids

CLOSE_UNAUTHENTICATED = 4401
# More ids than this in one subscription is refused: a client wanting more listens broadly.
MAX_SUBSCRIPTION = 1000
SUBSCRIBABLE = ("vms", "hosts", "tasks")
# Ids are 64-bit database keys: a bigger number is no object (and would overflow the query).
MAX_ID = 2**63 - 1
# A subscription is a few lists of ids: a bigger frame is refused unread.
MAX_FRAME = 64 * 1024

assert MESSAGE_TYPE == "paddock.event"  # handled by EventsConsumer.paddock_event


# --- token authentication ----------------------------------------------------------------------


@database_sync_to_async
def _user_for_token(raw: str):
    token = ApiToken.lookup(raw)
    if token is None:
        return AnonymousUser()
    now = timezone.now()
    if token.last_used is None or (now - token.last_used).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used=now)
    return token.user


class TokenAuthMiddleware(BaseMiddleware):
    """``Authorization: Token <token>`` on the websocket handshake sets ``scope["user"]``.

    When the header is present it decides alone: a wrong or expired token is anonymous even
    if a session cookie came along.
    """

    async def __call__(self, scope, receive, send):
        header = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value
                break
        if header is not None:
            parts = header.split()
            user = AnonymousUser()
            if len(parts) == 2 and parts[0].lower() == b"token":
                try:
                    user = await _user_for_token(parts[1].decode())
                except UnicodeDecodeError:
                    pass
            scope = dict(scope, user=user)
        return await super().__call__(scope, receive, send)


# --- the consumer ------------------------------------------------------------------------------


def _broad_groups(user) -> list[str]:
    if is_platform_admin(user):
        return ["admin"]
    return [f"tenant.{tid}" for tid in sorted(tenant_ids(user, Action.VM_VIEW))]


def _visible(user, wanted: dict[str, list[int]]) -> dict[str, list[int]]:
    """The subset of ``wanted`` the user may see, with the API's own scoping."""
    allowed: dict[str, list[int]] = {key: [] for key in SUBSCRIBABLE}
    for key in ("vms", "hosts"):
        visible = subscriptions.get(key)
        if wanted[key] and visible is not None:
            allowed[key] = sorted(visible(user, wanted[key]))
    if wanted["tasks"]:
        allowed["tasks"] = sorted(
            tasks_for(user).filter(pk__in=wanted["tasks"]).values_list("pk", flat=True)
        )
    return allowed


def _current(user, wanted: dict[str, list[int]]) -> list[dict]:
    """What the objects of ``wanted`` that the user may see are now: the messages their next
    change would send, marked ``"current": true`` (a page that connects, or reconnects, learns
    what changed before its socket was there)."""
    messages: list[dict] = []
    for key in ("vms", "hosts"):
        current = subscriptions.get(f"{key}.current")
        if wanted[key] and current is not None:
            messages += current(user, wanted[key])
    if wanted["tasks"]:
        tasks = tasks_for(user).filter(pk__in=wanted["tasks"]).prefetch_related(None)
        messages += [task_message(task, current=True) for task in tasks.order_by("pk")]
    return messages


def _parse_subscription(value) -> dict[str, list[int]] | None:
    if not isinstance(value, dict) or set(value) - set(SUBSCRIBABLE):
        return None
    result: dict[str, list[int]] = {}
    for key in SUBSCRIBABLE:
        ids = value.get(key) or []
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_ID for i in ids
        ):
            return None
        result[key] = sorted(set(ids))
    if sum(len(ids) for ids in result.values()) > MAX_SUBSCRIPTION:
        return None
    return result


class EventsConsumer(AsyncJsonWebsocketConsumer):
    async def dispatch(self, message):
        # Channels closes stale database connections before every handler, through the one
        # thread that runs sync code: with 500 clients on a VM each event queued 500 hops there.
        # An event touches no database (what does, goes through database_sync_to_async, which
        # closes them itself), so it is handed straight to its handler.
        if message.get("type") == MESSAGE_TYPE:
            await self.paddock_event(message)
            return
        await super().dispatch(message)

    async def connect(self):
        user = self.scope.get("user")
        self.joined: set[str] = set()
        if user is None or not user.is_authenticated or not user.is_active:
            # Accepted first so that the client sees the close code, not a failed handshake.
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        self.broad = await database_sync_to_async(_broad_groups)(user)
        await self.accept()
        await self._switch(self.broad)
        await self.send_json({"type": "hello", "user": user.get_username(), "scope": "all"})

    async def disconnect(self, code):
        for group in getattr(self, "joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.joined = set()

    async def _switch(self, groups: list[str]) -> None:
        """Join ``groups`` first, then leave the others: no gap, at most a duplicate."""
        wanted = set(groups)
        for group in sorted(wanted - self.joined):
            await self.channel_layer.group_add(group, self.channel_name)
        for group in sorted(self.joined - wanted):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.joined = wanted

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        """A frame that is not one JSON text is answered with an error, never a dropped socket."""
        if text_data is None or len(text_data) > MAX_FRAME:
            await self.send_json({"type": "error", "error": "Send one JSON object per text frame."})
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            await self.send_json({"type": "error", "error": "The message is not valid JSON."})
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and "current" in content:
            await self._send_current(content["current"])
            return
        if not isinstance(content, dict) or "subscribe" not in content:
            await self.send_json({"type": "error", "error": "Unknown message."})
            return
        value = content["subscribe"]
        if value is None:
            await self._switch(self.broad)
            await self.send_json({"type": "subscribed", "scope": "all"})
            return
        wanted = _parse_subscription(value)
        if wanted is None:
            await self.send_json(
                {
                    "type": "error",
                    "error": "subscribe takes null or an object of id lists: "
                    f"vms, hosts, tasks (at most {MAX_SUBSCRIPTION} ids).",
                }
            )
            return
        allowed = await database_sync_to_async(_visible)(self.user, wanted)
        groups = [
            f"{prefix}.{pk}"
            for key, prefix in (("vms", "vm"), ("hosts", "host"), ("tasks", "task"))
            for pk in allowed[key]
        ]
        # A subscribed VM or host also streams its live metric points (the charts).
        metric_groups = [f"metrics.vm.{pk}" for pk in allowed["vms"]]
        metric_groups += [f"metrics.host.{pk}" for pk in allowed["hosts"]]
        keep_all = content.get("keep_all") is True
        if keep_all:
            # The broad groups already carry every event of these objects (a page with charts
            # keeps its task bar); only their metrics are added. Joining vm.<id> or task.<id>
            # as well would deliver each of their events twice.
            groups = [*self.broad, *metric_groups]
        else:
            groups += metric_groups
        await self._switch(groups)
        denied = {
            key: sorted(set(wanted[key]) - set(allowed[key]))
            for key in SUBSCRIBABLE
            if set(wanted[key]) - set(allowed[key])
        }
        reply = {"type": "subscribed", "scope": "all" if keep_all else "objects", **allowed}
        if keep_all:
            reply["keep_all"] = True
        if denied:
            # Not visible or not existing: the same answer, as the API gives 404 for both.
            reply["not_found"] = denied
        await self.send_json(reply)
        for message in await database_sync_to_async(_current)(self.user, allowed):
            await self.send_json(message)

    async def _send_current(self, value) -> None:
        """``{"current": {"vms": [...], "hosts": [...], "tasks": [...]}}``: the present state of
        those objects (the ones the user may see), one message each, then ``{"type":
        "current", "count": n}``; the groups joined stay as they are."""
        wanted = _parse_subscription(value)
        if wanted is None:
            await self.send_json(
                {
                    "type": "error",
                    "error": "current takes an object of id lists: vms, hosts, tasks "
                    f"(at most {MAX_SUBSCRIPTION} ids).",
                }
            )
            return
        messages = await database_sync_to_async(_current)(self.user, wanted)
        for message in messages:
            await self.send_json(message)
        await self.send_json({"type": "current", "count": len(messages)})

    async def paddock_event(self, message):
        text = message.get("text")
        if text is None:
            await self.send_json(message["event"])
        else:
            await self.send(text_data=text)
