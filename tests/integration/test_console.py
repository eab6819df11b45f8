"""Consoles on the real libvirtd: the VNC proxy speaks RFB with a real QEMU, the serial console
carries a real guest's boot text and keystrokes, and a ticket opens one console, once.

The websocket routes are tested through ``vms.console_urls`` behind Channels' session
authentication, the way ``paddock.routing`` serves them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import libvirt
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.auth import AuthMiddlewareStack
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from django.conf import settings
from django.test import Client
from django.utils import timezone

from hosts import services as host_services
from panel.choices import Role
from tests.conftest import run_queued_tasks
from tests.integration import sshd as sshd_helpers
from tests.integration import tinyguest
from vms import console, console_urls
from vms.models import VirtualMachine

from .guests import cleanup, define

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The fixtures live in the helper module; naming them here registers them for this module.
ssh_client_key = sshd_helpers.ssh_client_key
make_sshd = sshd_helpers.make_sshd
paddock_ssh_key = sshd_helpers.paddock_ssh_key

URI = "qemu:///system"
PREFIX = "paddocktest-console-"
RFB_GREETING = b"RFB 003.008\n"


@pytest.fixture(autouse=True)
def _redis_layer_waits(settings):
    """redis-py 8 gives every connection a 5 s read timeout, which ends channels_redis's
    blocking receive of an idle consumer (django/channels_redis#422): wait longer than its
    5 s BZPOPMIN instead."""
    layer = settings.CHANNEL_LAYERS["default"]
    if layer["BACKEND"].startswith("channels_redis"):
        hosts = [
            {"address": h, "socket_timeout": 15} if isinstance(h, str) else h
            for h in layer["CONFIG"]["hosts"]
        ]
        settings.CHANNEL_LAYERS = {
            "default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": hosts}}
        }


@pytest.fixture
def qemu():
    conn = libvirt.open(URI)
    prefix = f"{PREFIX}{uuid.uuid4().hex[:8]}-"
    yield conn, prefix
    cleanup(conn, prefix)
    conn.close()


class WebsocketCommunicator(ApplicationCommunicator):
    """A websocket client for an ASGI app in this process: ``channels.testing``'s, which that
    package only offers with daphne installed."""

    def __init__(self, application, path: str, headers=None, subprotocols=None):
        scope = {
            "type": "websocket",
            "path": path,
            "query_string": b"",
            "headers": headers or [],
            "subprotocols": subprotocols or [],
        }
        super().__init__(application, scope)

    async def connect(self, timeout: float = 1):
        """(True, subprotocol) when accepted, (False, close code) when refused."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        assert response["type"] == "websocket.accept", response
        return True, response.get("subprotocol")

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if text_data is not None:
            await self.send_input({"type": "websocket.receive", "text": text_data})
        else:
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})

    async def receive_from(self, timeout: float = 1):
        response = await self.receive_output(timeout)
        assert response["type"] == "websocket.send", response
        return response["bytes"] if response.get("bytes") is not None else response["text"]

    async def disconnect(self, code: int = 1000, timeout: float = 10):
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)


def _application():
    return AuthMiddlewareStack(URLRouter(console_urls.websocket_urlpatterns))


def _session_cookie(user) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return [(b"cookie", f"{name}={client.cookies[name].value}".encode())]


def _add_host(admin, name: str, uri: str, ssh_host_key: str = ""):
    host, _task = host_services.host_create(
        user=admin, name=name, uri=uri, ssh_host_key=ssh_host_key
    )
    run_queued_tasks()
    host.refresh_from_db()
    assert host.status == "online", host.last_error
    return host


def _communicator(url: str, cookie=None) -> WebsocketCommunicator:
    """A client of ``url``, logged in with ``cookie`` (from :func:`_session_cookie`) if given."""
    headers = cookie or []
    return WebsocketCommunicator(_application(), url, headers=headers, subprotocols=["binary"])


async def _issue(user, vm, kind: str, **kwargs):
    """A ticket issued just before its use: it lives 30 s, and a loaded machine is slow."""
    return await sync_to_async(console.issue_ticket)(user=user, vm=vm, kind=kind, **kwargs)


async def _refusal(url: str, cookie=None) -> int:
    """Open ``url``; the close code it answers with, asserting no console byte came first."""
    comm = _communicator(url, cookie)
    connected, _subprotocol = await comm.connect(timeout=30)
    if not connected:
        return _subprotocol  # refused during the handshake: the code
    message = await comm.receive_output(timeout=30)
    assert message["type"] == "websocket.close", f"a refused socket sent {message!r}"
    await comm.disconnect()
    return message["code"]


async def _read_until(comm, needle: bytes, timeout: float) -> bytes:
    received = b""
    deadline = time.monotonic() + timeout
    while needle not in received:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {needle!r} within {timeout:.0f}s; got:\n{received[-2000:]!r}")
        try:
            message = await comm.receive_output(timeout=left)
        except TimeoutError:
            continue
        assert message["type"] == "websocket.send", f"console closed: {message!r}"
        received += message.get("bytes") or (message.get("text") or "").encode()
    return received


async def _rfb_handshake(comm) -> None:
    """Read the server's greeting, answer with a client version, choose no security, and
    read the security result: bytes went both ways through the proxy."""
    greeting = await comm.receive_from(timeout=30)
    assert greeting == RFB_GREETING, greeting
    await comm.send_to(bytes_data=RFB_GREETING)
    types = await comm.receive_from(timeout=30)
    assert isinstance(types, bytes) and types[0] >= 1, types
    assert 1 in types[1 : 1 + types[0]], f"no 'None' security type offered: {types!r}"
    await comm.send_to(bytes_data=b"\x01")
    assert await comm.receive_from(timeout=30) == b"\x00\x00\x00\x00"  # SecurityResult: OK


# --- VNC ------------------------------------------------------------------------------------


def test_vnc_proxy_speaks_rfb_with_a_real_vm_and_tickets_open_once(
    qemu, admin_user, tenant, other_tenant, make_member
):
    conn, prefix = qemu
    running = define(conn, f"{prefix}vnc", start=True)
    define(conn, f"{prefix}other")
    host = _add_host(admin_user, "local", URI)
    vm = VirtualMachine.objects.get(host=host, uuid=running.UUIDString())
    other_vm = VirtualMachine.objects.get(host=host, name=f"{prefix}other")
    VirtualMachine.objects.filter(pk__in=[vm.pk, other_vm.pk]).update(tenant=tenant)
    vm.refresh_from_db()
    other_vm.refresh_from_db()
    # The inventory's port may be stale (autoport picks a new one at every start): the proxy
    # asks libvirt.
    VirtualMachine.objects.filter(pk=vm.pk).update(vnc_port=1)

    member = make_member(tenant, Role.MEMBER)
    operator = make_member(tenant, Role.OPERATOR)
    member_cookie, operator_cookie = _session_cookie(member), _session_cookie(operator)

    async def scenario():
        layer = get_channel_layer()
        listener = await layer.new_channel()
        await layer.group_add(f"vm.{vm.pk}", listener)

        issued = await _issue(member, vm, "vnc")
        comm = _communicator(issued.url, member_cookie)
        connected, subprotocol = await comm.connect(timeout=30)
        assert connected and subprotocol == "binary"
        status = await asyncio.wait_for(layer.receive(listener), 30)
        assert status == {
            "type": "paddock.event",
            "event": {
                "type": "console.status",
                "vm": vm.pk,
                "kind": "vnc",
                "connected": [member.username],
            },
        }
        await _rfb_handshake(comm)
        assert await sync_to_async(console.connected_users)(vm.pk, "vnc") == [member.username]
        await comm.disconnect()
        status = await asyncio.wait_for(layer.receive(listener), 30)
        assert status["event"]["connected"] == []

        # The same ticket again: refused, nothing sent.
        assert await _refusal(issued.url, member_cookie) == console.CLOSE_NOT_FOUND
        # A second use of a ticket already used once.
        reused = await _issue(member, vm, "vnc")
        comm = _communicator(reused.url, member_cookie)
        assert (await comm.connect(timeout=30))[0]
        assert await comm.receive_from(timeout=30) == RFB_GREETING
        await comm.disconnect()
        assert await _refusal(reused.url, member_cookie) == console.CLOSE_NOT_FOUND
        # Expired, shown on another VM's URL, or on the other kind's URL.
        expired = await _issue(member, vm, "vnc", now=timezone.now() - timedelta(seconds=31))
        assert await _refusal(expired.url, member_cookie) == console.CLOSE_NOT_FOUND
        foreign_vm = await _issue(member, vm, "vnc")
        foreign_url = console.ticket_url(other_vm.pk, "vnc", foreign_vm.ticket)
        assert await _refusal(foreign_url, member_cookie) == console.CLOSE_NOT_FOUND
        assert await _refusal(foreign_vm.url, member_cookie) == console.CLOSE_NOT_FOUND  # burnt
        wrong_kind = await _issue(member, vm, "serial")
        wrong_url = console.ticket_url(vm.pk, "vnc", wrong_kind.ticket)
        assert await _refusal(wrong_url, member_cookie) == console.CLOSE_NOT_FOUND
        # Another logged-in user's ticket.
        other_user = await _issue(member, vm, "vnc")
        assert await _refusal(other_user.url, operator_cookie) == console.CLOSE_FORBIDDEN
        # A made-up ticket.
        made_up = console.ticket_url(vm.pk, "vnc", "A" * 43)
        assert await _refusal(made_up) == console.CLOSE_NOT_FOUND
        # Without a session the ticket alone opens the console (API clients).
        ticket_alone = await _issue(member, vm, "vnc")
        comm = _communicator(ticket_alone.url)
        assert (await comm.connect(timeout=30))[0]
        await _rfb_handshake(comm)
        await comm.disconnect()
        await layer.group_discard(f"vm.{vm.pk}", listener)

    async_to_sync(scenario)()

    # Viewers and other tenants get no ticket at all.
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    with pytest.raises(PermissionDenied):
        console.issue_ticket(user=make_member(tenant, Role.VIEWER), vm=vm, kind="vnc")
    with pytest.raises(Http404):
        console.issue_ticket(user=make_member(other_tenant, Role.ADMIN), vm=vm, kind="vnc")


def test_vnc_of_a_stopped_vm_is_unavailable(qemu, admin_user):
    conn, prefix = qemu
    define(conn, f"{prefix}off")
    host = _add_host(admin_user, "local", URI)
    vm = VirtualMachine.objects.get(host=host, name=f"{prefix}off")
    issued = console.issue_ticket(user=admin_user, vm=vm, kind="vnc")
    code = async_to_sync(_refusal)(issued.url, _session_cookie(admin_user))
    assert code == console.CLOSE_UNAVAILABLE
    assert console.connected_users(vm.pk, "vnc") == []


class ForwardingSshd(sshd_helpers.PrivateSshd):
    """The test sshd, letting its user forward TCP (what ``ssh -W`` needs on the host)."""

    def _write_config(self) -> None:
        super()._write_config()
        text = self.config.read_text().replace("AllowTcpForwarding no", "AllowTcpForwarding local")
        self.config.write_text(text)


def test_vnc_of_a_remote_host_goes_through_ssh_with_the_pinned_key(
    qemu, admin_user, paddock_ssh_key, ssh_client_key, tmp_path
):
    conn, prefix = qemu
    running = define(conn, f"{prefix}ssh", start=True)
    server = ForwardingSshd(tmp_path / "sshd", ssh_client_key.public)
    server.start()
    try:
        host = _add_host(admin_user, "remote", server.uri, ssh_host_key=server.host_key.public)
        vm = VirtualMachine.objects.get(host=host, uuid=running.UUIDString())
        logins = server.accepted_logins()
        admin_cookie = _session_cookie(admin_user)

        async def scenario():
            issued = await _issue(admin_user, vm, "vnc")
            comm = _communicator(issued.url, admin_cookie)
            assert (await comm.connect(timeout=60))[0]
            await _rfb_handshake(comm)
            await comm.disconnect()

        async_to_sync(scenario)()
        assert server.accepted_logins() > logins  # the bytes went through this sshd
    finally:
        server.stop()


# --- serial -----------------------------------------------------------------------------------


def test_serial_console_carries_boot_text_and_keystrokes(
    qemu, admin_user, tenant, make_member, tiny_guest_files
):
    conn, prefix = qemu
    kernel, initrd = tiny_guest_files
    name = f"{prefix}serial"
    dom = conn.defineXML(tinyguest.tiny_guest_xml(name, kernel, initrd, serial_log=None))
    # Paused until the console is open, so the boot text is not printed to nobody.
    dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    host = _add_host(admin_user, "local", URI)
    VirtualMachine.objects.filter(host=host, name=name).update(tenant=tenant)
    vm = VirtualMachine.objects.get(host=host, name=name)
    member = make_member(tenant, Role.MEMBER)
    member_cookie = _session_cookie(member)

    async def scenario():
        issued = await _issue(member, vm, "serial")
        vnc_url = console.ticket_url(vm.pk, "vnc", (await _issue(member, vm, "serial")).ticket)
        # A serial ticket does not open the VNC display.
        assert await _refusal(vnc_url, member_cookie) == console.CLOSE_NOT_FOUND
        comm = _communicator(issued.url, member_cookie)
        connected, _ = await comm.connect(timeout=60)
        assert connected
        await asyncio.to_thread(dom.resume)
        await _read_until(comm, tinyguest.READY_MARKER.encode(), tinyguest.BOOT_TIMEOUT)
        # xterm.js sends keystrokes as text frames; the shell on ttyS0 runs them.
        await comm.send_to(text_data="echo hi-paddock-$((40+2))\r")
        await _read_until(comm, b"hi-paddock-42", 60)
        await comm.send_to(bytes_data=b"echo bytes-$((1+1))-ok\r")
        await _read_until(comm, b"bytes-2-ok", 60)
        assert await sync_to_async(console.connected_users)(vm.pk, "serial") == [member.username]
        # The guest going away closes the socket cleanly.
        await asyncio.to_thread(dom.destroy)
        deadline = time.monotonic() + 30
        while True:
            message = await comm.receive_output(timeout=max(0.1, deadline - time.monotonic()))
            if message["type"] == "websocket.close":
                assert message.get("code", 1000) == console.CLOSE_NORMAL
                break
        await comm.disconnect()
        assert await sync_to_async(console.connected_users)(vm.pk, "serial") == []
        # The used ticket does not open it again.
        assert await _refusal(issued.url, member_cookie) == console.CLOSE_NOT_FOUND

    async_to_sync(scenario)()
