"""The watchers' TCP prober: one thread, many connects, each answered as accepted, refused or
timed out (a listener whose accept queue is full drops new SYNs, as a silent host would)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from hosts.probe import Prober
from hosts.watcher import wait_until


@pytest.fixture
def prober():
    prober = Prober(name="test-probe").start()
    yield prober
    prober.stop()


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


@pytest.fixture
def silent_port():
    """A port whose SYNs go unanswered: a listener with backlog 0 that never accepts, filled."""
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fill = []
    for _ in range(3):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        fill.append(client)
    time.sleep(0.2)
    yield port
    for client in fill:
        client.close()
    sock.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ask(prober, address, port, timeout=5.0):
    answers = []
    prober.submit(address, port, timeout, answers.append)
    assert wait_until(lambda: answers, timeout + 3)
    return answers[0]


def test_an_open_port_is_accepted(prober, listener):
    assert ask(prober, "127.0.0.1", listener.getsockname()[1]) is None


def test_a_closed_port_is_refused_at_once(prober):
    port = closed_port()
    started = time.monotonic()
    message = ask(prober, "127.0.0.1", port)
    assert message.startswith(f"Cannot reach 127.0.0.1 port {port}: Connection refused")
    assert time.monotonic() - started < 1


def test_a_silent_port_times_out_after_its_timeout(prober, silent_port):
    started = time.monotonic()
    message = ask(prober, "127.9.0.1", silent_port, timeout=1.0)
    took = time.monotonic() - started
    assert "Connection timed out" in message and 0.9 <= took < 2.5, (message, took)


def test_many_probes_in_flight_on_one_thread(prober, silent_port):
    before = threading.active_count()
    answers: dict[str, str | None] = {}
    refused = closed_port()
    started = time.monotonic()
    for n in range(300):
        address = f"127.9.{n // 250}.{n % 250 + 1}"
        port = silent_port if n % 2 else refused
        prober.submit(address, port, 1.5, lambda m, a=address: answers.__setitem__(a, m))
    assert wait_until(lambda: len(answers) == 300, 10), len(answers)
    # All silent ones waited out their 1.5 s together, not one after the other.
    assert time.monotonic() - started < 4
    assert threading.active_count() == before
    assert sum("timed out" in m for m in answers.values()) == 150
    assert sum("refused" in m for m in answers.values()) == 150


def test_probes_beyond_the_limit_wait_their_turn(silent_port):
    prober = Prober(max_in_flight=10, name="test-probe-small").start()
    try:
        answers = []
        for n in range(25):
            prober.submit(f"127.9.1.{n + 1}", silent_port, 0.5, answers.append)
        time.sleep(0.2)
        assert prober.in_flight <= 10
        assert wait_until(lambda: len(answers) == 25, 5)
    finally:
        prober.stop()
