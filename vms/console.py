"""VM consoles: single-use tickets, the sessions they open, and the console API.

The flow (see docs/console.md):

1. ``POST /api/vms/{id}/console/`` with ``{"kind": "vnc"|"serial"}`` calls :func:`issue_ticket`,
   which checks the user's role in the VM's tenant and answers a random ticket, valid for at
   most ``TICKET_SECONDS``, bound to that user, VM and kind, and the websocket URL it opens.
2. The websocket consumer (``vms.consumers``) calls :func:`redeem_ticket`: one compare-and-swap
   marks the ticket used, so a ticket opens one websocket, once.
3. The consumer opens the console through the driver (``hosts.driver.console.open_console``:
   raw RFB from the VM's VNC socket, or the serial console as a libvirt stream) and pipes
   bytes both ways; :func:`session_opened`, :func:`session_alive` and :func:`session_closed`
   record the session, which is how :func:`connected_users` knows who is connected.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.response import Response

from panel.tenancy import Action, can

from .console_models import ConsoleKind, ConsoleTicket

logger = logging.getLogger(__name__)

TICKET_SECONDS = 30  # a ticket's life; never longer
ALIVE_SECONDS = 30  # an open session renews ``alive_at`` this often
STALE_SECONDS = 90  # a session not renewed for this long (its process died) is not "connected"
KEEP_CLOSED_DAYS = 30  # closed sessions are kept this long, as a record of who used a console

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")

# Websocket close codes. No byte of a console is sent before a refusal.
CLOSE_NORMAL = 1000
CLOSE_FORBIDDEN = 4403  # the ticket belongs to another user, or the user lost the right
CLOSE_NOT_FOUND = 4404  # no such ticket: unknown, used, expired, or for another VM or kind
CLOSE_UNAVAILABLE = 4409  # the VM is not running or has no such console
CLOSE_SIMULATED = 4501  # the VM is on a simulated host (libvirt's test driver): no console
CLOSE_BACKEND = 4502  # the host or the VM's console could not be reached

# Each close code as the sentence the console shows (static/js/console.js says the same; the
# close frame carries the refusal's own sentence as its reason, up to 123 bytes).
CLOSE_SENTENCES = {
    CLOSE_NORMAL: "The console ended.",
    CLOSE_FORBIDDEN: "Your role may no longer use this console.",
    CLOSE_NOT_FOUND: "The console ticket was refused: it expired or was used already.",
    CLOSE_UNAVAILABLE: "The VM is not running, or has no console of this kind.",
    CLOSE_SIMULATED: "The simulated host has no console.",
    CLOSE_BACKEND: "The host or its console could not be reached.",
}


def close_reason(message: str) -> str:
    """``message`` cut to what a websocket close frame may carry (123 bytes of UTF-8)."""
    data = (message or "").encode()
    if len(data) <= 123:
        return message or ""
    return data[:120].decode(errors="ignore").rstrip() + "…"


class TicketRefused(Exception):
    """The ticket does not open this console; ``code`` is the websocket close code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


# --- tickets ------------------------------------------------------------------------------


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ticket_seconds() -> int:
    """The ticket life: ``PADDOCK["CONSOLE_TICKET_SECONDS"]`` when set, at most 30 s."""
    configured = int(settings.PADDOCK.get("CONSOLE_TICKET_SECONDS", TICKET_SECONDS))
    return max(1, min(configured, TICKET_SECONDS))


def ticket_url(vm_id: int, kind: str, token: str) -> str:
    """The websocket path a ticket opens (relative to the panel's origin, ``ws(s)://``)."""
    return f"/ws/console/{vm_id}/{kind}/{token}/"


@dataclass(frozen=True)
class IssuedTicket:
    ticket: str
    url: str
    expires: datetime
    kind: str
    vm_id: int


def purge_tickets(now: datetime | None = None) -> int:
    """Forget tickets nobody used and old closed sessions; the number of rows deleted."""
    now = now or timezone.now()
    unused, _ = ConsoleTicket.objects.filter(
        used_at__isnull=True, expires__lt=now - timedelta(hours=1)
    ).delete()
    closed, _ = ConsoleTicket.objects.filter(
        closed_at__lt=now - timedelta(days=KEEP_CLOSED_DAYS)
    ).delete()
    return unused + closed


def issue_ticket(*, user, vm, kind: str, now: datetime | None = None) -> IssuedTicket:
    """A ticket for ``user`` to open the ``kind`` console of ``vm`` once, within 30 s.

    A VM of a tenant the user does not belong to does not exist for them (``Http404``); a
    viewer may see the VM but gets no console (``PermissionDenied``).
    """
    if not (user and user.is_authenticated and user.is_active):
        raise PermissionDenied("Log in to open a console.")
    if not can(user, Action.VM_VIEW, vm.tenant_id):
        raise Http404("No such VM.")
    if not can(user, Action.VM_CONSOLE, vm.tenant_id):
        raise PermissionDenied("Your role in this tenant does not include the console.")
    if kind not in ConsoleKind.values:
        raise ValidationError({"kind": f"Unknown console kind {kind!r}: vnc or serial."})
    if vm.gone:
        raise ValidationError("The VM is gone from its host.")
    now = now or timezone.now()
    purge_tickets(now)
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=ticket_seconds())
    ConsoleTicket.objects.create(
        token_hash=_hash(token), user=user, vm=vm, kind=kind, created=now, expires=expires
    )
    return IssuedTicket(
        ticket=token, url=ticket_url(vm.pk, kind, token), expires=expires, kind=kind, vm_id=vm.pk
    )


def redeem_ticket(
    token: str, *, vm_id: int, kind: str, user=None, now: datetime | None = None
) -> ConsoleTicket:
    """Use the ticket, once: the redeemed ticket (with ``user`` and ``vm.host`` loaded), or
    :class:`TicketRefused`.

    The first presentation of a ticket uses it up, whatever follows: a ticket shown on another
    VM's or kind's URL, or by another logged-in user, is refused and cannot be used again.
    ``user`` is the websocket's session user: when someone is logged in it must be the
    ticket's owner; without a session the ticket alone opens the console (API clients).
    """
    if not isinstance(token, str) or not _TOKEN_RE.match(token):
        raise TicketRefused(CLOSE_NOT_FOUND, "No such console ticket.")
    now = now or timezone.now()
    token_hash = _hash(token)
    claimed = ConsoleTicket.objects.filter(
        token_hash=token_hash, used_at__isnull=True, expires__gt=now
    ).update(used_at=now)
    if claimed != 1:
        raise TicketRefused(CLOSE_NOT_FOUND, "The console ticket is unknown, used or expired.")
    ticket = ConsoleTicket.objects.select_related("user", "vm", "vm__host").get(
        token_hash=token_hash
    )
    try:
        if ticket.vm_id != vm_id or ticket.kind != kind:
            raise TicketRefused(CLOSE_NOT_FOUND, "The console ticket is for another console.")
        if user is not None and user.is_authenticated and user.pk != ticket.user_id:
            raise TicketRefused(CLOSE_FORBIDDEN, "The console ticket belongs to another user.")
        owner = ticket.user
        if not owner.is_active or not can(owner, Action.VM_CONSOLE, ticket.vm.tenant_id):
            raise TicketRefused(CLOSE_FORBIDDEN, "The console is no longer allowed.")
        if ticket.vm.gone:
            raise TicketRefused(CLOSE_NOT_FOUND, "The VM is gone from its host.")
    except TicketRefused:
        ConsoleTicket.objects.filter(pk=ticket.pk).update(closed_at=now)
        raise
    return ticket


def session_opened(ticket_id: int) -> None:
    ConsoleTicket.objects.filter(pk=ticket_id).update(alive_at=timezone.now())


def session_alive(ticket_id: int) -> None:
    ConsoleTicket.objects.filter(pk=ticket_id, closed_at__isnull=True).update(
        alive_at=timezone.now()
    )


def session_closed(ticket_id: int) -> None:
    ConsoleTicket.objects.filter(pk=ticket_id, closed_at__isnull=True).update(
        closed_at=timezone.now()
    )


def connected_users(vm_id: int, kind: str, now: datetime | None = None) -> list[str]:
    """Usernames with an open ``kind`` console session on the VM, sorted, each once."""
    now = now or timezone.now()
    names = ConsoleTicket.objects.filter(
        vm_id=vm_id,
        kind=kind,
        used_at__isnull=False,
        closed_at__isnull=True,
        alive_at__gte=now - timedelta(seconds=STALE_SECONDS),
    ).values_list("user__username", flat=True)
    return sorted(set(names))


def console_status(vm) -> dict[str, list[str]]:
    """Who is connected to each console of the VM: ``{"vnc": [...], "serial": [...]}``."""
    return {kind: connected_users(vm.pk, kind) for kind in ConsoleKind.values}


def status_event(vm_id: int, kind: str) -> dict:
    """The ``console.status`` event for the VM page (sent to ``vm.<id>``, the tenant, admin)."""
    return {
        "type": "console.status",
        "vm": vm_id,
        "kind": kind,
        "connected": connected_users(vm_id, kind),
    }


# --- API ----------------------------------------------------------------------------------


class ConsoleRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ConsoleKind.choices, default=ConsoleKind.VNC)


class ConsoleTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(help_text="Single use; valid until ``expires`` (≤ 30 s).")
    url = serializers.CharField(help_text="Websocket path that the ticket opens, once.")
    expires = serializers.DateTimeField()


class ConsoleStatusSerializer(serializers.Serializer):
    vnc = serializers.ListField(child=serializers.CharField())
    serial = serializers.ListField(child=serializers.CharField())


def console_response(request, vm) -> Response:
    """The body of ``/api/vms/{id}/console/`` for a VM the user may see: ``POST`` issues a
    ticket (201), ``GET`` says who is connected to each console (200)."""
    if request.method == "GET":
        return Response(ConsoleStatusSerializer(console_status(vm)).data)
    ser = ConsoleRequestSerializer(data=request.data or {})
    ser.is_valid(raise_exception=True)
    issued = issue_ticket(user=request.user, vm=vm, kind=ser.validated_data["kind"])
    return Response(ConsoleTicketSerializer(issued).data, status=status.HTTP_201_CREATED)
