"""A host that does not answer ends its task in error within the call deadline, naming the call,
and the worker goes on with the next task.

Two stand-ins for a libvirtd that hangs: a socket that accepts connections and never answers
(the connection cannot even be opened), and a proxy in front of this machine's libvirtd that
stops passing bytes once the connection is open (the first call, ``getCapabilities``, hangs, as
it did while libvirtd was probing QEMU). The host is a ``qemu+ssh`` host as far as the inventory
goes; only the URI libvirt is given points at the stand-in.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

from hosts import services
from hosts.choices import HostStatus
from hosts.driver import connection
from panel.choices import TaskState

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

DEADLINE = 2.0
LIBVIRTD_SOCKET = "/var/run/libvirt/libvirt-sock"
# A well-formed key: the host counts as pinned, so no SSH scan is attempted.
PINNED_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm4eyM4dKS6l1k9ttXIKXk1Bz3OnaaaFL2Ghw0T0NEN"


class Stub:
    """A unix socket server in a thread. ``upstream``: pass bytes to and from that socket until
    ``freeze()``; without one, accept and never answer."""

    def __init__(self, upstream: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="paddock-stub-", dir="/tmp")
        self.path = os.path.join(self.dir, "libvirt-sock")
        self.upstream = upstream
        self.frozen = threading.Event()
        self.closing = threading.Event()
        self.sockets: list[socket.socket] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(8)
        self.server.settimeout(0.1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.path}"

    def freeze(self) -> None:
        self.frozen.set()

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            self.sockets.append(client)
            if self.upstream is None:
                continue  # accepted; never read, never answered
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(self.upstream)
            self.sockets.append(up)
            for src, dst in ((client, up), (up, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        while not self.closing.is_set():
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.frozen.is_set():
                continue  # swallowed: the host has fallen silent
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.closing.set()
        for sock in [self.server, *self.sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def short_deadline(settings):
    settings.PADDOCK = {**settings.PADDOCK, "LIBVIRT_CALL_SECONDS": DEADLINE}


@pytest.fixture
def silent_host(monkeypatch):
    """Where libvirt is sent for hosts named ``silent-*``: set ``.stub`` in the test."""
    real = connection.effective_uri
    target = {}

    def effective_uri(host):
        if host.name.startswith("silent-"):
            return target["stub"].uri
        return real(host)

    monkeypatch.setattr(connection, "effective_uri", effective_uri)
    yield target
    if "stub" in target:
        target["stub"].close()


def _add(user, run_tasks, name: str):
    # Adding tries the connection first; the host is kept offline and its sync is the test.
    host, task = services.host_create(
        user=user,
        name=name,
        uri=f"qemu+ssh://root@{name}.invalid/system",
        ssh_host_key=PINNED_KEY,
        offline=True,
    )
    started = time.monotonic()
    run_tasks()
    elapsed = time.monotonic() - started
    task.refresh_from_db()
    host.refresh_from_db()
    return host, task, elapsed


def _worker_goes_on(user, run_tasks, node_uri) -> None:
    """The same worker (this thread) runs the next task at once, on another host."""
    started = time.monotonic()
    _host, task = services.host_create(user=user, name="sim-after", uri=node_uri)
    run_tasks()
    task.refresh_from_db()
    assert task.state == TaskState.SUCCEEDED, task.error
    assert time.monotonic() - started < 15


def test_a_host_that_never_answers_fails_its_sync_within_the_deadline(
    admin_user, run_tasks, short_deadline, silent_host, node_uri
):
    silent_host["stub"] = Stub()
    host, task, elapsed = _add(admin_user, run_tasks, "silent-open")
    assert task.state == TaskState.FAILED
    assert "did not answer the call open within 2 s" in task.error
    assert elapsed < DEADLINE + 3
    assert host.status == HostStatus.ERROR
    assert "open" in host.last_error
    _worker_goes_on(admin_user, run_tasks, node_uri)


@pytest.mark.skipif(not os.path.exists(LIBVIRTD_SOCKET), reason="no local libvirtd")
def test_a_host_that_falls_silent_after_connecting_fails_naming_the_call(
    admin_user, run_tasks, short_deadline, silent_host, node_uri, monkeypatch
):
    stub = silent_host["stub"] = Stub(upstream=LIBVIRTD_SOCKET)
    real_open = connection._open

    opens = []

    def open_then_fall_silent(uri, label=""):
        conn = real_open(uri, label)
        if uri == stub.uri:
            opens.append(uri)
            if len(opens) == 2:  # the sync's open (the first is the add's connection check)
                stub.freeze()
        return conn

    monkeypatch.setattr(connection, "_open", open_then_fall_silent)
    host, task, elapsed = _add(admin_user, run_tasks, "silent-caps")
    assert task.state == TaskState.FAILED, task.error
    assert "did not answer the call getCapabilities within 2 s" in task.error
    assert elapsed < DEADLINE + 3
    assert host.status == HostStatus.ERROR
    assert "getCapabilities" in host.last_error
    # The connection that hung is gone from the cache: the next sync opens a new one.
    assert stub.uri not in connection._cache
    _worker_goes_on(admin_user, run_tasks, node_uri)
