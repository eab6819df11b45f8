"""The watcher pool's parts without a host: the scheduler's heap, backoff, batches that collapse,
per-host order on the appliers, shards and ``watch_hosts --shard``."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.management import CommandError, call_command

from hosts.models import Host
from hosts.shards import ALL, Shard
from hosts.watcher import (
    BACKOFF_MAX,
    HostWatcher,
    Scheduler,
    WatcherPool,
    _Batch,
    backoff,
    wait_until,
)
from paddock.management.commands.watch_hosts import shard_argument

# --- the scheduler -----------------------------------------------------------------------------


def test_scheduler_fires_due_calls_in_time_order():
    scheduler, fired = Scheduler(), []
    for when, key in ((3.0, "c"), (1.0, "a"), (2.0, "b")):
        scheduler.at(when, key, lambda key=key: fired.append(key))
    assert scheduler.due(0.5) == []
    for fn in scheduler.due(2.5):
        fn()
    assert fired == ["a", "b"]
    assert scheduler.pending() == 1


def test_scheduler_keeps_only_a_keys_latest_entry():
    scheduler, fired = Scheduler(), []
    scheduler.at(1.0, "host", lambda: fired.append("early"))
    scheduler.at(5.0, "host", lambda: fired.append("late"))
    assert scheduler.due(2.0) == []  # the early entry was replaced
    for fn in scheduler.due(5.0):
        fn()
    assert fired == ["late"]
    assert scheduler.pending() == 0


def test_scheduler_cancel_drops_the_entry():
    scheduler = Scheduler()
    scheduler.at(1.0, "host", lambda: None)
    scheduler.cancel("host")
    assert scheduler.due(10.0) == [] and scheduler.pending() == 0


def test_scheduler_thread_fires_at_the_due_time():
    scheduler = Scheduler(name="test-scheduler").start()
    try:
        fired: list[float] = []
        start = time.monotonic()
        scheduler.at(start + 0.3, "k", lambda: fired.append(time.monotonic()))
        assert wait_until(lambda: fired, 3)
        assert 0.25 <= fired[0] - start < 1.0
    finally:
        scheduler.stop()


def test_many_entries_need_no_thread_each():
    before = threading.active_count()
    scheduler = Scheduler(name="test-scheduler").start()
    try:
        count = {"n": 0}
        lock = threading.Lock()

        def hit():
            with lock:
                count["n"] += 1

        now = time.monotonic()
        for key in range(2000):
            scheduler.at(now + (key % 10) * 0.02, key, hit)
        assert [t.name for t in threading.enumerate()].count("test-scheduler") == 1
        assert threading.active_count() <= before + 1
        assert wait_until(lambda: count["n"] == 2000, 5), count
    finally:
        scheduler.stop()


def test_backoff_doubles_up_to_its_ceiling():
    delays, delay = [], 1.0
    for _ in range(7):
        delays.append(delay)
        delay = backoff(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, BACKOFF_MAX, BACKOFF_MAX]


# --- batches and the appliers --------------------------------------------------------------------


def test_batch_collapses_repeated_events():
    batch = _Batch()
    for item in (("domain", "u1", "started"), ("domain", "u1", "stopped"), ("pools",), ("pools",)):
        batch.add(item)
    assert batch.domains == {"u1": "stopped"} and batch.pools and not batch.networks


def test_batch_keeps_the_later_of_offline_and_reconcile():
    batch = _Batch()
    batch.add(("offline", "refused"))
    batch.add(("reconcile",))
    assert batch.reconcile and batch.offline is None
    batch.add(("offline", "refused again"))
    assert not batch.reconcile and batch.offline == "refused again"
    assert not _Batch() and batch


def test_a_batch_given_back_comes_before_what_was_queued_since():
    batch, later = _Batch(), _Batch()
    batch.add(("reconcile",))
    batch.add(("domain", "u1", "started"))
    later.add(("domain", "u1", "stopped"))
    later.add(("domain", "u2", "defined"))
    later.add(("offline", "refused"))
    batch.merge(later)
    assert batch.domains == {"u1": "stopped", "u2": "defined"}
    assert batch.offline == "refused" and not batch.reconcile


class _Recorder(HostWatcher):
    """A watcher whose batches are recorded, slowly, instead of applied."""

    log: list = []
    active: dict = {}
    lock = threading.Lock()

    def _run_batch(self, batch: _Batch) -> None:
        if not batch:
            return
        with self.lock:
            overlap = self.active.get(self.host_id, 0)
            self.active[self.host_id] = overlap + 1
        time.sleep(0.05)
        with self.lock:
            self.active[self.host_id] -= 1
            self.log.append((self.host_id, overlap, dict(batch.domains)))


def test_appliers_keep_each_hosts_order_and_collapse_its_events():
    pool = WatcherPool(openers=1, appliers=3)
    for number in range(pool.appliers):
        pool._spawn(pool._apply_loop, f"test-apply-{number}")
    watchers = [_Recorder(pk, pool) for pk in (1, 2)]
    try:
        for step in range(20):
            for watcher in watchers:
                watcher._put(("domain", "u", f"e{step}"))
            time.sleep(0.005)
        assert wait_until(
            lambda: all(not w._queued for w in watchers) and sum(_Recorder.active.values()) == 0,
            10,
        )
        for watcher in watchers:
            mine = [entry for entry in _Recorder.log if entry[0] == watcher.host_id]
            assert all(overlap == 0 for _, overlap, _ in mine), mine  # never two at once
            assert len(mine) < 20  # events queued meanwhile collapsed
            assert mine[-1][2] == {"u": "e19"}  # the last event is the one that holds
    finally:
        pool.stop()


# --- shards ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shard"), [("0/1", ALL), ("1/2", Shard(1, 2)), (" 3 / 4 ", Shard(3, 4))]
)
def test_shard_parses(text, shard):
    assert Shard.parse(text) == shard


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2/2", "less than the number of shards"),
        ("5/2", "less than the number of shards"),
        ("0/0", "number of shards must be between"),
        ("-1/2", "written i/n"),
        ("1", "written i/n"),
        ("a/b", "written i/n"),
        ("", "written i/n"),
    ],
)
def test_bad_shard_is_refused_with_a_clear_message(text, says):
    with pytest.raises(ValueError, match=says):
        Shard.parse(text)
    with pytest.raises(CommandError, match="--shard: .*" + says):
        shard_argument(text)


def test_watch_hosts_refuses_a_bad_shard_before_starting():
    before = threading.active_count()
    with pytest.raises(CommandError, match="less than the number of shards"):
        call_command("watch_hosts", "--shard", "2/2")
    assert threading.active_count() == before


def test_shards_split_every_host_once():
    shards = [Shard(i, 3) for i in range(3)]
    for pk in range(1, 100):
        assert [s.owns(pk) for s in shards].count(True) == 1
    assert Shard(1, 3).owns(4) and not Shard(1, 3).owns(5)


@pytest.mark.django_db
def test_shard_query_takes_the_hosts_it_owns():
    hosts = Host.objects.bulk_create(
        Host(name=f"shard-{n}", uri=f"test:///shard-{n}.xml") for n in range(7)
    )
    pks = {h.pk for h in hosts}
    seen = set()
    for shard in (Shard(0, 2), Shard(1, 2)):
        got = set(shard.hosts(Host.objects.filter(pk__in=pks)).values_list("pk", flat=True))
        assert got == {pk for pk in pks if shard.owns(pk)}
        assert not got & seen
        seen |= got
    assert seen == pks
    assert set(ALL.hosts(Host.objects.filter(pk__in=pks)).values_list("pk", flat=True)) == pks
