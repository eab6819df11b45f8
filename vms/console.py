"""VM consoles: single-use tickets, and the byte pipes behind the console websockets.

The flow (see docs/console.md):

1. ``POST /api/vms/{id}/console/`` with ``{"kind": "vnc"|"serial"}`` calls :func:`issue_ticket`,
   which checks the user's role in the VM's tenant and answers a random ticket, valid for at
   most ``TICKET_SECONDS``, bound to that user, VM and kind, and the websocket URL it opens.
2. The websocket consumer (``vms.consumers``) calls :func:`redeem_ticket`: one compare-and-swap
   marks the ticket used, so a ticket opens one websocket, once.
3. The consumer opens a backend and pipes bytes both ways: :func:`open_vnc` (raw RFB from the
   VM's VNC socket, read from the live domain XML; through ``ssh -W`` with the host's pinned key
   for ``qemu+ssh`` hosts) or :func:`open_serial` (the serial console as a libvirt stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import libvirt
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone
from lxml import etree
from rest_framework import serializers, status
from rest_framework.response import Response

from hosts.driver.connection import (
    HostConnectError,
    effective_uri,
    ensure_client_key,
    get_connection,
    known_hosts_file,
    libvirt_error_message,
    parse_uri,
    ssh_options,
)
from panel.tenancy import Action, can

from .console_models import ConsoleKind, ConsoleTicket
from .domxml import parse_domain

logger = logging.getLogger(__name__)

TICKET_SECONDS = 30  # a ticket's life; never longer
ALIVE_SECONDS = 30  # an open session renews ``alive_at`` this often
STALE_SECONDS = 90  # a session not renewed for this long (its process died) is not "connected"
KEEP_CLOSED_DAYS = 30  # closed sessions are kept this long, as a record of who used a console
CONNECT_TIMEOUT = 20.0  # seconds to reach a VNC socket and read its greeting
CHUNK = 65536

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")

# Websocket close codes. No byte of a console is sent before a refusal.
CLOSE_NORMAL = 1000
CLOSE_FORBIDDEN = 4403  # the ticket belongs to another user, or the user lost the right
CLOSE_NOT_FOUND = 4404  # no such ticket: unknown, used, expired, or for another VM or kind
CLOSE_UNAVAILABLE = 4409  # the VM is not running or has no such console
CLOSE_BACKEND = 4502  # the host or the VM's console could not be reached


class TicketRefused(Exception):
    """The ticket does not open this console; ``code`` is the websocket close code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class ConsoleUnavailable(Exception):
    """The VM has no console of that kind right now (not running, no display...)."""


class ConsoleBackendError(Exception):
    """The host or the console socket could not be reached; the message says why."""


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


# --- the libvirt event loop ------------------------------------------------------------------

_event_lock = threading.Lock()
_event_thread: threading.Thread | None = None


def _run_default_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # pragma: no cover - keep the loop alive whatever a callback does
            logger.exception("libvirt event loop iteration failed")
            time.sleep(0.1)


def ensure_event_loop() -> None:
    """Make sure libvirt has a running event loop in this process (idempotent, thread-safe).

    Stream callbacks (the serial console) and keepalives need one. There must be one
    registration per process: the host watcher's (``hosts.watcher.ensure_event_loop``) is used
    when that module exists, and libvirt's asyncio loop (``libvirtaio``) if this process already
    runs one; otherwise libvirt's default implementation is registered here, once, and a daemon
    thread runs it. Connections opened before the first registration have no event handling:
    console streams use a connection of their own.
    """
    global _event_thread
    with _event_lock:
        if _event_thread is not None or getattr(libvirt, "_paddock_event_loop", False):
            return
        try:
            import libvirtaio

            current = getattr(libvirtaio, "getCurrentImpl", lambda: None)
            if current() is not None:
                libvirt._paddock_event_loop = True
                return
        except ImportError:  # pragma: no cover - shipped with libvirt-python
            pass
        try:
            from hosts.watcher import ensure_event_loop as watcher_event_loop
        except ImportError:
            watcher_event_loop = None
        if watcher_event_loop is not None:
            watcher_event_loop()
        else:
            libvirt.virEventRegisterDefaultImpl()
            _event_thread = threading.Thread(
                target=_run_default_event_loop, name="libvirt-events", daemon=True
            )
            _event_thread.start()
        # Marks the registration for any other module of this process that needs the loop.
        libvirt._paddock_event_loop = True


# --- backends -------------------------------------------------------------------------------


class Backend:
    """A byte pipe to a console: ``read()`` (``b""`` at the end), ``write()``, ``close()``."""

    async def read(self) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    async def write(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class StreamBackend(Backend):
    """A TCP connection, or the stdin/stdout of an ``ssh -W`` process."""

    def __init__(self, reader, writer, proc=None):
        self.reader = reader
        self.writer = writer
        self.proc = proc
        self.first = b""  # bytes read while checking the connection, not yet delivered

    async def read(self) -> bytes:
        if self.first:
            data, self.first = self.first, b""
            return data
        return await self.reader.read(CHUNK)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def ssh_error(self) -> str:
        if self.proc is None or self.proc.stderr is None:
            return ""
        with contextlib.suppress(TimeoutError, OSError):
            err = await asyncio.wait_for(self.proc.stderr.read(4096), 5)
            return err.decode(errors="replace").strip().replace("\r", "")
        return ""

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()
        with contextlib.suppress(Exception):
            self.writer.close()
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def _vnc_endpoint(xml: str) -> tuple[str, int]:
    """(address to connect to on the host, port) of the domain's VNC display."""
    port = parse_domain(xml).vnc_port
    if not port:
        raise ConsoleUnavailable("The VM has no VNC display on a TCP port.")
    root = etree.fromstring(xml.encode())
    listen = ""
    for graphics in root.findall("devices/graphics"):
        if graphics.get("type") == "vnc":
            listen = graphics.get("listen") or ""
            el = graphics.find("listen")
            if not listen and el is not None and el.get("type") == "address":
                listen = el.get("address") or ""
            break
    try:
        address = ipaddress.ip_address(listen) if listen else None
    except ValueError:
        address = None  # a name: it resolves on the host, loopback reaches it when bound
    if address is None or address.is_unspecified or address.is_loopback:
        return "127.0.0.1", port
    return str(address), port


def live_vnc_endpoint(host, vm_uuid) -> tuple[str, int]:
    """The VNC address and port of the running domain, from its live XML (autoport gives a
    new port at every start, so the inventory's may be stale). Blocking: run in a thread."""
    try:
        conn = get_connection(host)
        dom = conn.lookupByUUIDString(str(vm_uuid))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise ConsoleUnavailable("The VM is not on its host.") from None
        raise ConsoleBackendError(libvirt_error_message(exc)) from None
    except HostConnectError as exc:
        raise ConsoleBackendError(str(exc)) from None
    try:
        if not dom.isActive():
            raise ConsoleUnavailable("The VM is not running.")
        xml = dom.XMLDesc(0)
    except libvirt.libvirtError as exc:
        raise ConsoleBackendError(libvirt_error_message(exc)) from None
    return _vnc_endpoint(xml)


def ssh_tunnel_argv(host, address: str, port: int) -> list[str]:
    """``ssh … -W address:port user@host``: a byte pipe to ``address:port`` as seen from the
    host, over SSH with the host's pinned key only (``hosts.driver.connection.ssh_options``)."""
    parsed = parse_uri(host.uri)
    if not host.ssh_host_key:
        raise HostConnectError("The host has no pinned SSH host key.")
    known_hosts = known_hosts_file(host.name, parsed.address, parsed.port, host.ssh_host_key)
    if not Path(settings.PADDOCK["SSH_KEY"]).exists():
        ensure_client_key()
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    argv = ssh_options(known_hosts)
    if parsed.port:
        argv += ["-p", str(parsed.port)]
    return [*argv, "-T", "-W", target, "--", f"{parsed.user}@{parsed.address}"]


async def open_vnc(host, vm_uuid) -> StreamBackend:
    """A pipe to the VM's VNC socket whose server has already spoken (its ``RFB xxx.yyy``
    greeting is the first thing :meth:`StreamBackend.read` returns)."""
    address, port = await asyncio.to_thread(live_vnc_endpoint, host, vm_uuid)
    kind = parse_uri(host.uri).kind
    if kind == "ssh":
        try:
            argv = await asyncio.to_thread(ssh_tunnel_argv, host, address, port)
        except HostConnectError as exc:
            raise ConsoleBackendError(str(exc)) from None
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        backend = StreamBackend(proc.stdout, proc.stdin, proc)
    else:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port), CONNECT_TIMEOUT
            )
        except (TimeoutError, OSError) as exc:
            raise ConsoleBackendError(
                f"Could not reach the VNC display at {address}:{port}: {exc}"
            ) from None
        backend = StreamBackend(reader, writer)
    try:
        first = await asyncio.wait_for(backend.reader.read(CHUNK), CONNECT_TIMEOUT)
    except (TimeoutError, OSError) as exc:
        first, error = b"", str(exc) or "no greeting from the VNC server"
    else:
        error = "" if first else "the connection closed before the VNC greeting"
    if not first:
        detail = await backend.ssh_error() or error
        await backend.close()
        raise ConsoleBackendError(f"Could not reach the VNC display: {detail}")
    backend.first = first
    return backend


class SerialBackend(Backend):
    """The VM's serial console as a non-blocking libvirt stream on a connection of its own.

    libvirt's event loop thread reads the stream when it is readable and hands the bytes to
    the asyncio loop that opened it; writes go through a worker thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.conn = None
        self.stream = None
        self._lock = threading.Lock()
        self._ended = False
        self._closed = False

    @classmethod
    async def open(cls, host, vm_uuid) -> SerialBackend:
        ensure_event_loop()
        backend = cls(asyncio.get_running_loop())
        await asyncio.to_thread(backend._open, host, vm_uuid)
        return backend

    def _open(self, host, vm_uuid) -> None:
        try:
            uri = effective_uri(host)
            conn = libvirt.open(uri)
        except (libvirt.libvirtError, HostConnectError) as exc:
            raise ConsoleBackendError(libvirt_error_message(exc)) from None
        try:
            if not uri.startswith("test:"):
                with contextlib.suppress(libvirt.libvirtError):
                    conn.setKeepAlive(5, 6)
            try:
                dom = conn.lookupByUUIDString(str(vm_uuid))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise ConsoleUnavailable("The VM is not on its host.") from None
                raise
            if not dom.isActive():
                raise ConsoleUnavailable("The VM is not running.")
            stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            try:
                dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            except libvirt.libvirtError as exc:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                if exc.get_error_code() in (
                    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                    libvirt.VIR_ERR_INTERNAL_ERROR,
                    libvirt.VIR_ERR_OPERATION_INVALID,
                ):
                    raise ConsoleUnavailable(
                        f"The VM has no serial console to open: {libvirt_error_message(exc)}"
                    ) from None
                raise
            self.conn, self.stream = conn, stream
            stream.eventAddCallback(
                libvirt.VIR_STREAM_EVENT_READABLE
                | libvirt.VIR_STREAM_EVENT_ERROR
                | libvirt.VIR_STREAM_EVENT_HANGUP,
                self._on_event,
                None,
            )
        except libvirt.libvirtError as exc:
            self._release(conn)
            raise ConsoleBackendError(libvirt_error_message(exc)) from None
        except BaseException:
            self._release(conn)
            raise

    def _release(self, conn) -> None:
        self.conn = self.stream = None
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def _deliver(self, data: bytes) -> None:
        with contextlib.suppress(RuntimeError):  # the asyncio loop is gone: nobody listens
            self.loop.call_soon_threadsafe(self.queue.put_nowait, data)

    def _end(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
            stream = self.stream
        if stream is not None:
            with contextlib.suppress(libvirt.libvirtError):
                stream.eventRemoveCallback()
        self._deliver(b"")

    def _on_event(self, stream, events, _opaque) -> None:
        """libvirt's event loop thread: the stream is readable, or ended."""
        if self._closed:
            return
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(CHUNK)
                except libvirt.libvirtError:
                    self._end()
                    return
                if data == -2:  # drained for now
                    break
                if not data:  # the console closed (the VM stopped, or another took it over)
                    self._end()
                    return
                self._deliver(data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._end()

    async def read(self) -> bytes:
        return await self.queue.get()

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while view:
            stream = self.stream
            if stream is None or self._ended:
                raise ConsoleBackendError("The serial console is closed.")
            try:
                sent = stream.send(bytes(view))
            except libvirt.libvirtError as exc:
                raise ConsoleBackendError(libvirt_error_message(exc)) from None
            if sent == -2:
                if time.monotonic() > deadline:
                    raise ConsoleBackendError("The serial console does not take input.")
                time.sleep(0.01)
                continue
            view = view[sent:]

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._send, data)

    def _close(self) -> None:
        self._closed = True
        with self._lock:
            self._ended = True
            stream, conn = self.stream, self.conn
            self.stream = self.conn = None
        if stream is not None:
            with contextlib.suppress(libvirt.libvirtError):
                stream.eventRemoveCallback()
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    async def close(self) -> None:
        await asyncio.to_thread(self._close)


async def open_serial(host, vm_uuid) -> SerialBackend:
    return await SerialBackend.open(host, vm_uuid)


async def open_backend(kind: str, host, vm_uuid) -> Backend:
    if kind == ConsoleKind.VNC:
        return await open_vnc(host, vm_uuid)
    return await open_serial(host, vm_uuid)
