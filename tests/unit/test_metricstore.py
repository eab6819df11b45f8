"""The metric rings (wrap-around, rollups, bounded size, ranges) and the rate derivations."""

from __future__ import annotations

import math

import pytest

from metrics import simulator, values
from metrics.store import (
    TIERS,
    Layout,
    MemoryBackend,
    MetricStore,
    bytes_per_object,
)

T0 = 1_700_000_000 - 1_700_000_000 % 86400  # midnight UTC: every tier's slot starts here


def store() -> MetricStore:
    return MetricStore(MemoryBackend(), persist=False)


def test_a_point_lands_in_every_tier_and_reads_back():
    s = store()
    s.ingest("vm", T0 + 5, {7: {"cpu_percent": 12.5, "net_rx_bps": 100.0}})
    hour = s.series("vm", 7, "hour", now=T0 + 5)
    assert hour["step"] == 10
    assert hour["series"]["cpu_percent"] == [[T0, 12.5]]
    assert hour["series"]["net_rx_bps"] == [[T0, 100.0]]
    assert hour["series"]["disk_read_bps"] == []  # no value: no point
    for name in ("day", "week", "month", "year"):
        assert s.series("vm", 7, name, now=T0 + 5)["series"]["cpu_percent"] == [[T0, 12.5]]
    assert s.latest("vm")[7]["values"]["cpu_percent"] == 12.5
    assert s.latest("vm")[7]["values"]["disk_read_bps"] is None


def test_rollups_average_and_keep_the_maximum():
    s = store()
    for i, v in enumerate([10.0, 20.0, 30.0, 40.0, 50.0, 60.0]):  # one minute of 10 s points
        s.ingest("vm", T0 + 10 * i, {1: {"cpu_percent": v}})
    now = T0 + 59
    assert [p[1] for p in s.series("vm", 1, "hour", now=now)["series"]["cpu_percent"]] == [
        10.0,
        20.0,
        30.0,
        40.0,
        50.0,
        60.0,
    ]
    assert s.series("vm", 1, "day", now=now)["series"]["cpu_percent"] == [[T0, 35.0]]
    week = s.series("vm", 1, "week", now=now)
    assert week["series"]["cpu_percent"] == [[T0, 35.0]]
    assert week["max"]["cpu_percent"] == [[T0, 60.0]]
    # The next minute is a row of its own.
    s.ingest("vm", T0 + 60, {1: {"cpu_percent": 5.0}})
    day = s.series("vm", 1, "day", now=T0 + 61)["series"]["cpu_percent"]
    assert day == [[T0, 35.0], [T0 + 60, 5.0]]
    assert s.series("vm", 1, "week", now=T0 + 61)["series"]["cpu_percent"] == [
        [T0, pytest.approx(30.714, abs=1e-3)]
    ]


def test_missing_values_do_not_pull_the_average_down():
    s = store()
    s.ingest("vm", T0, {1: {"cpu_percent": None, "net_rx_bps": 4.0}})
    s.ingest("vm", T0 + 10, {1: {"cpu_percent": 8.0, "net_rx_bps": float("nan")}})
    day = s.series("vm", 1, "day", now=T0 + 20)["series"]
    assert day["cpu_percent"] == [[T0, 8.0]]
    assert day["net_rx_bps"] == [[T0, 4.0]]


def test_the_ring_wraps_around_and_never_grows():
    s = store()
    tier = TIERS["s10"]
    size = Layout.of("vm", "s10").size
    for i in range(tier.slots + 50):  # more points than slots
        s.ingest("vm", T0 + 10 * i, {3: {"cpu_percent": float(i)}})
    assert len(s.backend.get("vm:3:s10")) == size
    now = T0 + 10 * (tier.slots + 49)
    points = s.series("vm", 3, "hour", now=now)["series"]["cpu_percent"]
    assert len(points) == tier.slots
    assert points[0] == [T0 + 500, 50.0]  # the 50 oldest were overwritten
    assert points[-1] == [now, float(tier.slots + 49)]
    # No ring of an object is ever larger than its fixed size, whatever was ingested.
    for t in TIERS:
        assert len(s.backend.get(f"vm:3:{t}")) <= bytes_per_object("vm")[t]


def test_stale_rows_of_an_earlier_lap_are_not_returned():
    s = store()
    s.ingest("vm", T0, {1: {"cpu_percent": 1.0}})
    later = T0 + 3600 * 2  # the same s10 slot two laps later, never written since
    assert s.series("vm", 1, "hour", now=later)["series"]["cpu_percent"] == []
    s.ingest("vm", later, {1: {"cpu_percent": 2.0}})
    assert s.series("vm", 1, "hour", now=later)["series"]["cpu_percent"] == [[later, 2.0]]


def test_range_queries_cut_at_the_range():
    s = store()
    for i in range(0, 2 * 86400, 600):  # two days, every 10 minutes
        s.ingest("vm", T0 + i, {1: {"cpu_percent": 1.0}})
    now = T0 + 2 * 86400 - 600
    assert len(s.series("vm", 1, "hour", now=now)["series"]["cpu_percent"]) == 6
    day = s.series("vm", 1, "day", now=now)["series"]["cpu_percent"]
    assert len(day) == 144 and day[0][0] > now - 86400
    assert len(s.series("vm", 1, "week", now=now)["series"]["cpu_percent"]) == 48
    assert len(s.series("vm", 1, "year", now=now)["series"]["cpu_percent"]) == 2
    with pytest.raises(KeyError):
        s.series("vm", 1, "decade", now=now)


def test_a_restarted_writer_continues_the_current_row():
    backend = MemoryBackend()
    MetricStore(backend, persist=False).ingest("vm", T0, {1: {"cpu_percent": 10.0}})
    again = MetricStore(backend, persist=False)  # a new process on the same hot store
    again.ingest("vm", T0 + 10, {1: {"cpu_percent": 30.0}})
    assert again.series("vm", 1, "day", now=T0 + 20)["series"]["cpu_percent"] == [[T0, 20.0]]


def test_forget_drops_every_ring():
    s = store()
    s.ingest("vm", T0, {1: {"cpu_percent": 1.0}, 2: {"cpu_percent": 2.0}})
    s.forget("vm", [1])
    assert all(s.backend.get(f"vm:1:{t}") is None for t in TIERS)
    assert s.backend.get("vm:2:s10") is not None
    assert set(s.latest("vm")) == {2}


def test_sizes_are_bounded_and_documented():
    sizes = bytes_per_object("vm")
    assert sizes == {"s10": 20160, "m1": 80640, "h1": 77376, "d1": 38064, "total": 216240}
    assert bytes_per_object("host")["total"] < sizes["total"]


@pytest.mark.django_db
def test_checkpoint_and_reload_from_the_database():
    pytest.importorskip("metrics.models")
    from django.apps import apps

    if not apps.is_installed("metrics"):
        pytest.skip("the metrics app is not installed")
    s = MetricStore(MemoryBackend(), checkpoint_seconds=0)
    s.ingest("vm", T0, {1: {"cpu_percent": 42.0}})
    assert s.checkpoint() == 0  # not due (0 = only when forced)
    assert s.checkpoint(force=True) == 3  # m1, h1, d1; the live 10 s ring is not persisted
    fresh = MetricStore(MemoryBackend())  # the process restarted: empty memory
    assert fresh.series("vm", 1, "day", now=T0 + 1)["series"]["cpu_percent"] == [[T0, 42.0]]
    assert fresh.series("vm", 1, "hour", now=T0 + 1)["series"]["cpu_percent"] == []
    fresh.ingest("vm", T0 + 10, {1: {"cpu_percent": 44.0}})  # continues the persisted row
    assert fresh.series("vm", 1, "day", now=T0 + 11)["series"]["cpu_percent"] == [[T0, 43.0]]


# --- derivations ------------------------------------------------------------------------------


def test_rates_from_counter_deltas():
    prev = {"net_rx_bytes": 1000, "cpu_time": 0}
    cur = {"net_rx_bytes": 6000, "cpu_time": 5_000_000_000}
    assert values.rate(prev, cur, "net_rx_bytes", 10.0) == 500.0
    assert values.rate(None, cur, "net_rx_bytes", 10.0) is None
    assert values.rate(prev, cur, "net_rx_bytes", 0.0) is None
    assert values.rate(prev, {"net_rx_bytes": None}, "net_rx_bytes", 10.0) is None


def test_a_counter_reset_gives_no_rate():
    assert values.rate({"x": 900}, {"x": 100}, "x", 10.0) is None


def test_vm_values_from_two_bulk_records():
    def record(cpu_ns, delay_ns, rx, rd):
        return {
            "state.state": 1,
            "cpu.time": cpu_ns,
            "vcpu.current": 2,
            "vcpu.maximum": 2,
            "vcpu.0.delay": delay_ns // 2,
            "vcpu.1.delay": delay_ns - delay_ns // 2,
            "balloon.current": 1048576,
            "balloon.rss": 524288,
            "net.count": 1,
            "net.0.rx.bytes": rx,
            "net.0.rx.pkts": rx // 1000,
            "block.count": 2,
            "block.0.rd.bytes": rd,
            "block.1.rd.bytes": rd,
            "block.0.rd.reqs": 1,
        }

    a = values.vm_counters(record(0, 0, 0, 0))
    b = values.vm_counters(record(10_000_000_000, 1_000_000_000, 10_000_000, 5000))
    v = values.derive_vm(a, b, 10.0)
    assert v["cpu_percent"] == pytest.approx(50.0)  # 10 s of CPU over 10 s on 2 vCPUs
    assert v["vcpu_delay_percent"] == pytest.approx(5.0)
    assert v["net_rx_bps"] == pytest.approx(1_000_000)
    assert v["net_rx_pps"] == pytest.approx(1000)
    assert v["disk_read_bps"] == pytest.approx(1000)
    assert v["memory_balloon_bytes"] == 1024**3
    assert v["memory_used_bytes"] == 512 * 1024**2
    assert v["net_tx_bps"] is None  # not reported: no value, not zero
    # The domain restarted: counters went down, no rates this round, gauges still there.
    r = values.derive_vm(b, a, 10.0)
    assert r["cpu_percent"] is None and r["vcpu_delay_percent"] is None
    assert r["memory_balloon_bytes"] == 1024**3
    # First sample: no rates yet.
    assert values.derive_vm(None, a, 0.0)["cpu_percent"] is None


def test_host_cpu_from_cpu_stats():
    a = {"kernel": 0, "user": 0, "idle": 0, "iowait": 0}
    b = {"kernel": 10, "user": 30, "idle": 50, "iowait": 10}
    assert values.derive_host_cpu(a, b) == (40.0, 10.0)
    assert values.derive_host_cpu(None, b) == (None, None)
    assert values.derive_host_cpu(b, a) == (None, None)


def test_the_simulator_is_plausible_and_repeatable():
    uuid = "5f0c3a9e-1111-2222-3333-444455556666"
    a = simulator.simulate_vm(uuid, T0, vcpus=2, memory_mib=2048)
    assert a == simulator.simulate_vm(uuid, T0, vcpus=2, memory_mib=2048)
    assert 0 <= a["cpu_percent"] <= 100
    assert a["vcpu_delay_percent"] >= 0
    assert 0 < a["memory_used_bytes"] <= 2048 * 1048576
    cpus = [simulator.simulate_vm(uuid, T0 + 10 * i)["cpu_percent"] for i in range(360)]
    assert max(cpus) - min(cpus) > 5  # it moves
    assert all(math.isfinite(c) for c in cpus)
