"""Many unreachable hosts on one watcher process: every one is marked offline with libvirt's
reason within one reconcile interval, none online, attempts keep coming with backoff, and the
process's threads do not grow with the hosts. The hosts are ``qemu+ssh://`` URIs on loopback
addresses: a port nothing listens on (refused at once), a port whose listener's accept queue is
full (SYNs dropped: the connect times out), and a port that accepts and hangs up (the probe
passes, ssh and libvirt run and libvirt's message is kept)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.conf import settings

from hosts.driver import deadline
from hosts.models import Host
from hosts.shards import Shard
from hosts.watcher import WatcherManager, WatcherPool, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HOSTS = 200
# Any well-formed key: nothing answers on the port, so it is never compared.
PINNED_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unreachable_hosts(count: int, tag: str, base: int = 1, port: int | None = None) -> list[Host]:
    port = port or closed_port()
    return Host.objects.bulk_create(
        Host(
            name=f"{tag}-{n:04d}",
            # All of 127/8 is loopback: one address per host, the port closed on each.
            uri=f"qemu+ssh://root@127.{base}.{n // 250}.{n % 250 + 1}:{port}/system",
            ssh_host_key=PINNED_KEY,
            status="online",  # as if they had answered before: each must be seen going offline
        )
        for n in range(count)
    )


@pytest.fixture
def pool():
    pool = WatcherPool(openers=8, appliers=4)
    yield pool
    pool.stop()


def run_manager(manager: WatcherManager):
    stop = threading.Event()
    thread = threading.Thread(target=manager.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def test_every_unreachable_host_is_offline_within_one_interval(pool):
    hosts = unreachable_hosts(HOSTS, "unreach")
    pks = [h.pk for h in hosts]
    interval = settings.PADDOCK["RECONCILE_SECONDS"]
    before = threading.active_count()
    started = time.monotonic()
    manager = WatcherManager(60, Shard(), pool)
    stop, thread = run_manager(manager)
    try:

        def offline() -> int:
            return Host.objects.filter(pk__in=pks, status="offline").count()

        assert wait_until(lambda: offline() == HOSTS, interval, 0.2), (
            f"{offline()} of {HOSTS} offline after {interval:g} s"
        )
        took = time.monotonic() - started
        threads = threading.active_count()
        print(f"{HOSTS} unreachable hosts offline in {took:.1f} s; threads {before} -> {threads}")
        # The pool's fixed threads, the manager's, and call threads for the opens in flight:
        # nothing per host.
        bound = pool.threads + 1 + pool.openers + deadline.MAX_IDLE_THREADS + 2
        assert threads - before <= bound < HOSTS // 4, (threads, before, bound)
        assert not Host.objects.filter(pk__in=pks, status="online").exists()
        errors = set(Host.objects.filter(pk__in=pks).values_list("last_error", flat=True))
        # libvirt's words: ssh's refusal, or the pipe ssh left when it exited first.
        assert errors and all("Connection refused" in e or "Broken pipe" in e for e in errors), (
            errors
        )

        # Attempts go on, each host with its own next one in the heap, backing off.
        watchers = [w for _target, w in manager.watchers.values()]
        assert wait_until(lambda: all(w.delay >= 4 for w in watchers), 20), sorted(
            {w.delay for w in watchers}
        )
        assert wait_until(lambda: pool.scheduler.pending() == HOSTS, 5), pool.scheduler.pending()
        assert threading.active_count() - before <= bound
    finally:
        stop.set()
        thread.join(15)


def test_shards_split_the_hosts_and_follow_rescans(pool):
    hosts = unreachable_hosts(12, "shard")
    managers = [WatcherManager(60, Shard(i, 2), pool) for i in range(2)]
    for manager in managers:
        manager.rescan()
    try:
        owned = [set(m.watchers) for m in managers]
        assert owned[0] | owned[1] == {h.pk for h in hosts} and not owned[0] & owned[1]
        for index, pks in enumerate(owned):
            assert all(pk % 2 == index for pk in pks)
        # A host added is picked up by its shard only; a host removed leaves it.
        added = unreachable_hosts(1, "shard-added", base=2)[0]
        gone = hosts[0]
        gone.delete()
        for manager in managers:
            manager.rescan()
        home = managers[added.pk % 2]
        assert added.pk in home.watchers
        assert added.pk not in managers[1 - added.pk % 2].watchers
        assert all(gone.pk not in m.watchers for m in managers)
        assert wait_until(lambda: Host.objects.filter(pk=added.pk, status="offline").exists(), 15)
    finally:
        for manager in managers:
            manager.stop_all()


@pytest.fixture
def silent_port():
    """A port whose SYNs go unanswered: a listener with backlog 0 that never accepts, filled."""
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fill = [socket.socket() for _ in range(3)]
    for client in fill:
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
    time.sleep(0.2)
    yield port
    for client in fill:
        client.close()
    sock.close()


def test_hosts_that_drop_packets_time_out_together(pool, silent_port, settings):
    settings.PADDOCK = {**settings.PADDOCK, "CONNECT_TIMEOUT": 3}
    hosts = unreachable_hosts(100, "silent", base=3, port=silent_port)
    pks = [h.pk for h in hosts]
    before = threading.active_count()
    started = time.monotonic()
    manager = WatcherManager(60, Shard(), pool)
    manager.rescan()
    try:
        assert wait_until(
            lambda: Host.objects.filter(pk__in=pks, status="offline").count() == 100, 15, 0.2
        )
        took = time.monotonic() - started
        # One connect timeout for all of them, not 100 of them one opener after another.
        assert 2.5 <= took < 10, took
        assert threading.active_count() - before <= pool.threads + pool.openers + 10
        errors = set(Host.objects.filter(pk__in=pks).values_list("last_error", flat=True))
        assert all("Connection timed out" in e for e in errors), errors
    finally:
        manager.stop_all()


def test_a_port_that_answers_gets_libvirts_own_message(pool):
    """The probe passes, so ssh runs through libvirt; what it says is the host's error."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = threading.Event()

    def hang_up():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.close()

    server = threading.Thread(target=hang_up, daemon=True)
    server.start()
    host = unreachable_hosts(1, "hangup", base=4, port=sock.getsockname()[1])[0]
    host.uri = f"qemu+ssh://root@127.0.0.1:{sock.getsockname()[1]}/system"
    host.save(update_fields=["uri"])
    manager = WatcherManager(60, Shard(), pool)
    manager.rescan()
    try:
        assert wait_until(
            lambda: Host.objects.filter(pk=host.pk, status="offline").exists(), 20, 0.2
        )
        host.refresh_from_db()
        assert "TCP probe" not in host.last_error and host.last_error, host.last_error
        watcher = manager.watchers[host.pk][1]
        assert watcher.stats["connects"] == 0
    finally:
        manager.stop_all()
        stop.set()
        server.join(2)
        sock.close()
