"""Console backends: byte pipes to a running domain's VNC display or serial console.

What the websocket consumer (``vms.consumers``) sees of a console is a
:class:`ConsoleBackend`: ``await Backend.open(host, vm_uuid)``, then ``read()`` (``b""`` when
the console ended), ``write(data)`` and ``close()``. Tickets, sessions and the websocket stay
in ``vms``; everything that speaks libvirt (or reaches the host) is here:

* :class:`VncBackend`: the VNC socket found in the domain's live XML (autoport gives a new port
  at every start, so the inventory's may be stale), reached over TCP on a local host or through
  ``ssh -W`` with the host's pinned key for ``qemu+ssh`` hosts. ``open`` returns once the
  server has spoken: its ``RFB xxx.yyy`` greeting is the first thing ``read`` returns.
* :class:`SerialBackend`: the serial console as a non-blocking libvirt stream on a connection
  of its own, taken over from any other holder (``VIR_DOMAIN_CONSOLE_FORCE``). Its callbacks
  run on libvirt's event thread (``hosts.driver.events``) and hand the bytes to the asyncio
  loop that opened it.

:func:`open_console` picks the backend by kind (``"vnc"`` or ``"serial"``). Opening raises
:class:`ConsoleUnavailable` when the VM has no such console right now (not running, not on its
host, no display) and :class:`ConsoleBackendError` when the host or the console cannot be
reached; the messages are fit for the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
import time
from pathlib import Path

import libvirt
from django.conf import settings

from panel.xmlutil import parse as parse_xml

from .connection import (
    HostConnectError,
    effective_uri,
    ensure_client_key,
    get_connection,
    known_hosts_file,
    libvirt_error_message,
    parse_uri,
    ssh_options,
)
from .events import ensure_event_loop

CONNECT_TIMEOUT = 20.0  # seconds to reach a console, read a VNC greeting, or deliver input
CHUNK = 65536


class ConsoleUnavailable(Exception):
    """The VM has no console of that kind right now (not running, no display...)."""


class ConsoleBackendError(Exception):
    """The host or the console socket could not be reached; the message says why."""


class ConsoleBackend:
    """A byte pipe to a console: ``read()`` (``b""`` at the end), ``write()``, ``close()``."""

    kind = ""

    @classmethod
    async def open(cls, host, vm_uuid) -> ConsoleBackend:  # pragma: no cover - interface
        raise NotImplementedError

    async def read(self) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    async def write(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


# --- VNC ----------------------------------------------------------------------------------------


def vnc_endpoint(xml: str) -> tuple[str, int]:
    """(address to connect to on the host, port) of the domain's VNC display.

    The first VNC display with a TCP port; a display listening on all addresses, on loopback
    or on a name is reached on the host's loopback.
    """
    root = parse_xml(xml)
    for graphics in root.findall("devices/graphics"):
        if graphics.get("type") != "vnc":
            continue
        port = graphics.get("port") or ""
        if not (port.lstrip("-").isdigit() and int(port) > 0):
            continue
        listen = graphics.get("listen") or ""
        el = graphics.find("listen")
        if not listen and el is not None and el.get("type") == "address":
            listen = el.get("address") or ""
        try:
            address = ipaddress.ip_address(listen) if listen else None
        except ValueError:
            address = None  # a name: it resolves on the host, loopback reaches it when bound
        if address is None or address.is_unspecified or address.is_loopback:
            return "127.0.0.1", int(port)
        return str(address), int(port)
    raise ConsoleUnavailable("The VM has no VNC display on a TCP port.")


def live_vnc_endpoint(host, vm_uuid) -> tuple[str, int]:
    """The VNC address and port of the running domain, from its live XML. Blocking: run it in
    a thread."""
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
    return vnc_endpoint(xml)


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


class VncBackend(ConsoleBackend):
    """The VM's VNC display: a TCP connection, or the stdin/stdout of an ``ssh -W`` process."""

    kind = "vnc"

    def __init__(self, reader, writer, proc=None):
        self.reader = reader
        self.writer = writer
        self.proc = proc
        self.first = b""  # bytes read while checking the connection, not yet delivered

    @classmethod
    async def open(cls, host, vm_uuid) -> VncBackend:
        """A pipe to the VM's VNC socket whose server has already spoken."""
        address, port = await asyncio.to_thread(live_vnc_endpoint, host, vm_uuid)
        if parse_uri(host.uri).kind == "ssh":
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
            backend = cls(proc.stdout, proc.stdin, proc)
        else:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(address, port), CONNECT_TIMEOUT
                )
            except (TimeoutError, OSError) as exc:
                raise ConsoleBackendError(
                    f"Could not reach the VNC display at {address}:{port}: {exc}"
                ) from None
            backend = cls(reader, writer)
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

    async def read(self) -> bytes:
        if self.first:
            data, self.first = self.first, b""
            return data
        return await self.reader.read(CHUNK)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def ssh_error(self) -> str:
        """What the ``ssh`` process said on stderr (empty for a TCP connection)."""
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


# --- serial -------------------------------------------------------------------------------------


class SerialBackend(ConsoleBackend):
    """The VM's serial console as a non-blocking libvirt stream on a connection of its own.

    libvirt's event loop thread reads the stream when it is readable and hands the bytes to
    the asyncio loop that opened it; writes go through a worker thread.
    """

    kind = "serial"

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
        # Before the connection opens: a connection opened without the loop has no events.
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


# --- by kind ------------------------------------------------------------------------------------

BACKENDS: dict[str, type[ConsoleBackend]] = {
    VncBackend.kind: VncBackend,
    SerialBackend.kind: SerialBackend,
}


async def open_console(kind: str, host, vm_uuid) -> ConsoleBackend:
    """Open the ``kind`` console (``"vnc"`` or ``"serial"``) of the domain ``vm_uuid``."""
    try:
        backend = BACKENDS[kind]
    except KeyError:
        raise ConsoleUnavailable(f"No console of kind {kind!r}.") from None
    return await backend.open(host, vm_uuid)
