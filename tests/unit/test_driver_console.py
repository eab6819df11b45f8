"""The driver's console side: one libvirt event loop per process, and the console backends."""

from __future__ import annotations

import ast
import asyncio
import threading
from pathlib import Path

import libvirt
import pytest

from hosts import watcher
from hosts.driver import console as driver_console
from hosts.driver import events
from hosts.models import Host

ROOT = Path(__file__).resolve().parents[2]

# --- the event loop -----------------------------------------------------------------------------


def test_the_event_loop_is_registered_once_whoever_asks():
    callers = [threading.Thread(target=events.ensure_event_loop) for _ in range(8)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    events.ensure_event_loop()
    watcher.ensure_event_loop()
    assert events.event_loop_running()
    assert [t.name for t in threading.enumerate()].count("libvirt-events") == 1


def test_the_watcher_uses_the_drivers_event_loop():
    assert watcher.ensure_event_loop is events.ensure_event_loop


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "module", ["vms/console.py", "vms/consumers.py", "vms/console_models.py", "vms/console_urls.py"]
)
def test_the_console_room_imports_no_libvirt(module):
    assert not _imports(ROOT / module) & {"libvirt", "libvirtaio"}


def test_only_the_driver_registers_an_event_loop():
    registering = []
    for folder in ("hosts", "vms", "panel", "metrics", "paddock"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            if "virEventRegister" in text or "libvirtaio" in text:
                registering.append(str(path.relative_to(ROOT)))
    assert registering == ["hosts/driver/events.py"]


# --- VNC ----------------------------------------------------------------------------------------


def _local_host() -> Host:
    return Host(name="hv1", uri="qemu:///system")


async def _fake_vnc(greeting: bytes):
    """A TCP server that says ``greeting`` (or closes at once when empty), then echoes."""

    async def serve(reader, writer):
        if greeting:
            writer.write(greeting)
            await writer.drain()
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_the_vnc_backend_opens_once_the_server_has_spoken(monkeypatch):
    async def scenario():
        server, port = await _fake_vnc(b"RFB 003.008\n")
        monkeypatch.setattr(driver_console, "live_vnc_endpoint", lambda h, u: ("127.0.0.1", port))
        async with server:
            backend = await driver_console.open_console("vnc", _local_host(), "uuid")
            assert isinstance(backend, driver_console.VncBackend)
            assert await backend.read() == b"RFB 003.008\n"
            await backend.write(b"RFB 003.008\n")
            assert await backend.read() == b"RFB 003.008\n"
            await backend.close()

    asyncio.run(scenario())


def test_a_vnc_server_that_closes_before_its_greeting_is_a_backend_error(monkeypatch):
    async def scenario():
        server, port = await _fake_vnc(b"")
        monkeypatch.setattr(driver_console, "live_vnc_endpoint", lambda h, u: ("127.0.0.1", port))
        async with server:
            with pytest.raises(driver_console.ConsoleBackendError, match="before the VNC greeting"):
                await driver_console.open_console("vnc", _local_host(), "uuid")

    asyncio.run(scenario())


def test_the_test_drivers_domain_has_no_vnc_display():
    host = Host(name="t", uri="test:///default")
    uuid = libvirt.open("test:///default").lookupByName("test").UUIDString()
    with pytest.raises(driver_console.ConsoleUnavailable, match="no VNC display"):
        asyncio.run(driver_console.open_console("vnc", host, uuid))


# --- serial -------------------------------------------------------------------------------------


def test_a_domain_that_is_not_on_its_host_has_no_serial_console():
    host = Host(name="t", uri="test:///default")
    with pytest.raises(driver_console.ConsoleUnavailable, match="not on its host"):
        asyncio.run(
            driver_console.open_console("serial", host, "00000000-0000-0000-0000-000000000001")
        )


class _FakeStream:
    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.removed = False

    def recv(self, _size):
        return self.chunks.pop(0)

    def eventRemoveCallback(self):
        self.removed = True


def test_stream_callbacks_hand_the_bytes_to_the_asyncio_loop():
    """libvirt's event thread reads what the stream has and the websocket's loop gets it; the
    stream's end is ``b""``."""

    async def scenario():
        backend = driver_console.SerialBackend(asyncio.get_running_loop())
        stream = _FakeStream([b"login: ", -2, b"", b"never read"])
        backend.stream = stream
        readable = libvirt.VIR_STREAM_EVENT_READABLE
        thread = threading.Thread(target=backend._on_event, args=(stream, readable, None))
        thread.start()
        assert await asyncio.wait_for(backend.read(), 5) == b"login: "
        thread.join()
        assert not stream.removed  # drained for now, still open
        thread = threading.Thread(target=backend._on_event, args=(stream, readable, None))
        thread.start()
        assert await asyncio.wait_for(backend.read(), 5) == b""
        thread.join()
        assert stream.removed
        assert stream.chunks == [b"never read"]
        with pytest.raises(driver_console.ConsoleBackendError, match="closed"):
            await backend.write(b"x")

    asyncio.run(scenario())


def test_an_unknown_kind_opens_nothing():
    with pytest.raises(driver_console.ConsoleUnavailable):
        asyncio.run(driver_console.open_console("spice", _local_host(), "uuid"))
