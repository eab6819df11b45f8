"""The deadline of host calls: ``hosts.driver.deadline`` and the guarded connection."""

from __future__ import annotations

import threading
import time

import libvirt
import pytest

from hosts.driver import connection, deadline
from hosts.driver.errors import NO_DOMAIN, DriverError, HostCallTimeout, HostConnectError


def test_run_returns_the_result_and_raises_the_error():
    assert deadline.run(lambda a, b=0: a + b, 2, b=3, seconds=5) == 5
    with pytest.raises(ZeroDivisionError):
        deadline.run(lambda: 1 / 0, seconds=5)


def test_run_without_seconds_stays_in_the_callers_thread():
    assert deadline.run(threading.get_ident, seconds=None) == threading.get_ident()


def test_run_gives_up_after_its_seconds_and_the_call_thread_comes_back():
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(deadline.CallTimeout) as caught:
        deadline.run(release.wait, 10, seconds=0.2, what="getCapabilities")
    assert time.monotonic() - started < 2
    assert caught.value.what == "getCapabilities"
    assert "getCapabilities did not answer within 0.2 s" in str(caught.value)
    # The caller is free: the next call runs on another thread while the first one waits.
    assert deadline.run(lambda: "next", seconds=1) == "next"
    release.set()
    deadline_at = time.monotonic() + 5
    while deadline.busy_threads() and time.monotonic() < deadline_at:
        time.sleep(0.02)
    assert deadline.busy_threads() == 0


def test_call_threads_are_reused():
    first = deadline.run(threading.get_ident, seconds=5)
    assert deadline.run(threading.get_ident, seconds=5) == first


@pytest.fixture
def test_conn():
    raw = libvirt.open("test:///default")
    yield raw
    try:
        raw.close()
    except libvirt.libvirtError:
        pass


def test_guarded_objects_wrap_what_they_return_and_raise_driver_errors(test_conn):
    conn = connection.guarded(test_conn)
    assert connection.guarded(conn) is conn
    dom = conn.lookupByName("test")
    assert isinstance(dom, connection.Guarded)
    assert connection.raw(dom).name() == dom.name() == "test"
    assert dom.connect().raw is test_conn
    pools = conn.listAllStoragePools(0)
    assert pools and all(isinstance(p, connection.Guarded) for p in pools)
    stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)
    assert all(isinstance(d, connection.Guarded) and isinstance(s, dict) for d, s in stats)
    with pytest.raises(DriverError) as caught:
        conn.lookupByName("no-such-domain")
    assert caught.value.get_error_code() == NO_DOMAIN
    assert isinstance(caught.value, libvirt.libvirtError)  # older handlers still catch it


def test_a_call_that_does_not_answer_closes_the_connection(test_conn, settings):
    settings.PADDOCK = {**settings.PADDOCK, "LIBVIRT_CALL_SECONDS": 0.2}
    uri = "test:///default#silent"
    conn = connection.Guarded(test_conn, connection._Guard(test_conn, uri, "h1", bounded=True))
    connection._cache[uri] = conn
    release = threading.Event()
    test_conn.getCapabilities = lambda: release.wait(10)
    try:
        started = time.monotonic()
        with pytest.raises(HostCallTimeout) as caught:
            conn.getCapabilities()
        assert time.monotonic() - started < 2
        assert "getCapabilities" in str(caught.value) and "h1" in str(caught.value)
        assert isinstance(caught.value, HostConnectError)
        assert uri not in connection._cache
        # Later calls on the given-up connection fail at once, naming the call that hung.
        started = time.monotonic()
        with pytest.raises(HostCallTimeout, match="getCapabilities"):
            conn.getHostname()
        assert time.monotonic() - started < 0.1
    finally:
        release.set()
        connection._cache.pop(uri, None)


def test_open_connection_is_the_callers_own(tmp_path, settings):
    from types import SimpleNamespace

    from hosts.testnode import write_node

    settings.PADDOCK = {**settings.PADDOCK, "TEST_NODE_DIRS": [str(tmp_path)]}
    host = SimpleNamespace(name="own", uri=write_node(tmp_path / "node.xml"))
    conn = connection.open_connection(host)
    try:
        assert isinstance(conn, connection.Guarded)
        assert conn.getHostname()
        assert all(c is not conn for c in connection._cache.values())
    finally:
        connection.close_connection(conn)


def test_a_deadline_of_zero_means_none(test_conn, settings):
    settings.PADDOCK = {**settings.PADDOCK, "LIBVIRT_CALL_SECONDS": 0}
    conn = connection.Guarded(test_conn, connection._Guard(test_conn, "", "h", bounded=True))
    test_conn.getHostname = threading.get_ident
    assert conn.getHostname() == threading.get_ident()
    settings.PADDOCK = {**settings.PADDOCK, "LIBVIRT_CALL_SECONDS": 5}
    assert conn.getHostname() != threading.get_ident()


def test_an_upload_stream_that_stops_taking_data_is_given_up():
    from hosts.driver import storage as driver_storage

    release = threading.Event()
    stream = type("SilentStream", (), {"send": lambda self, data: release.wait(10)})()
    try:
        with pytest.raises(HostCallTimeout, match=r"stream send within 0\.2 s"):
            driver_storage._send_all(stream, b"data", 0.2)
    finally:
        release.set()
