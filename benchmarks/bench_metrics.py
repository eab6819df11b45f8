"""Metrics: stats collection on the real libvirtd, and history ingest for 50,000 VMs.

1. **Collection, 100 domains.** 100 diskless KVM (or TCG) domains of 32 MiB are defined and
   started on ``qemu:///system`` (names ``paddockbench-metrics-<pid>-NNN``), then, in the same
   run and alternating: the bulk call Paddock makes (``getAllDomainStats(…, NOWAIT)``, one per
   host per interval) beside a per-domain loop (``listAllDomains`` + ``state``,
   ``getCPUStats``, ``memoryStats``, ``vcpus`` per domain). The domains are destroyed and
   undefined at the end, also on failure.
2. **Ingest, 50,000 VMs.** One interval of points for 50,000 simulated VMs (12 metrics each)
   into the metric store: in memory (the embedded default) and in Redis (production), with the
   bytes written per interval; then the reads of a full day ring, and the database checkpoint of
   1,000 VMs' rollup rings (extrapolated to 50,000).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    BenchDatabase,
    BenchError,
    bench_environment,
    figure,
    header,
    note,
    run_main,
    setup_django_and_migrate,
    summary_ms,
)

DOMAINS = int(os.environ.get("BENCH_METRICS_DOMAINS", "100"))
VMS = int(os.environ.get("BENCH_METRICS_VMS", "50000"))
CHECKPOINT_VMS = 1000
ROUNDS = 10
# A time at which every tier's current row is the first of its ring (the day index is a
# multiple of both 31 and 366): Redis and the memory store allocate a ring only up to the rows
# written, so 50,000 VMs' writes do not allocate 50,000 full rings (10 GB) on this machine.
# SETRANGE costs the same at any offset of an allocated string.
T_ALIGNED = 11346 * 86400


def _fmt_ms(label: str, samples: list[float]) -> None:
    s = summary_ms(samples)
    figure(f"{label} p50", s["p50"], "ms")
    figure(f"{label} p95", s["p95"], "ms")


# --- 1. collection on the real libvirtd -------------------------------------------------------


def bench_collection() -> None:
    import libvirt

    from hosts.driver.stats import STATS, STATS_FLAGS
    from metrics.values import derive_vm, vm_counters
    from tests.integration.guests import cleanup, diskless_domain_xml, kvm_usable

    header(f"collection: {DOMAINS} running domains on qemu:///system")
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as exc:
        raise BenchError(f"qemu:///system does not answer: {exc}") from None
    prefix = f"paddockbench-metrics-{os.getpid()}-"
    virt = "kvm" if kvm_usable(conn) else "qemu"
    note(f"virt type {virt}, 32 MiB, 1 vCPU, no disks or NICs")
    try:
        started = time.perf_counter()
        for i in range(DOMAINS):
            dom = conn.defineXML(diskless_domain_xml(f"{prefix}{i:03d}", virt, memory_mib=32))
            dom.create()
        figure("define+start of the domains", time.perf_counter() - started, "s", 1)
        time.sleep(2.0)
        ours = [d for d in conn.listAllDomains() if d.name().startswith(prefix)]
        if len(ours) != DOMAINS:
            raise BenchError(f"{len(ours)} of {DOMAINS} domains are running")
        total = len(conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
        note(f"{total} running domains on the host in all (ours and others')")

        bulk, loop, derive = [], [], []
        prev = None
        for r in range(ROUNDS):
            order = ("bulk", "loop") if r % 2 == 0 else ("loop", "bulk")
            for what in order:
                t = time.perf_counter()
                if what == "bulk":
                    records = conn.getAllDomainStats(STATS, STATS_FLAGS)
                    bulk.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    cur = {d.UUIDString(): vm_counters(s) for d, s in records}
                    if prev is not None:
                        for key, c in cur.items():
                            derive_vm(prev.get(key), c, 1.0)
                    prev = cur
                    derive.append(time.perf_counter() - t)
                else:
                    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                        try:
                            dom.state()
                            dom.getCPUStats(True)
                            dom.memoryStats()
                            dom.vcpus()
                        except libvirt.libvirtError:
                            continue  # stopped meanwhile (by another user of this libvirtd)
                    loop.append(time.perf_counter() - t)
        figure("bulk getAllDomainStats: libvirt calls per round", 1)
        figure("per-domain loop: libvirt calls per round", 1 + 4 * total)
        _fmt_ms("bulk getAllDomainStats", bulk)
        _fmt_ms("per-domain loop", loop)
        _fmt_ms("derivation of the bulk records (Python)", derive)
        figure(
            "per-domain loop / bulk (p50)",
            summary_ms(loop)["p50"] / summary_ms(bulk)["p50"],
            "x",
            1,
        )
    finally:
        started = time.perf_counter()
        cleanup(conn, prefix)
        figure("destroy+undefine of the domains", time.perf_counter() - started, "s", 1)
        conn.close()


# --- 2. ingest of 50,000 VMs ------------------------------------------------------------------


def _points(n: int, ts: float) -> dict[int, dict]:
    from metrics.simulator import simulate_vm

    return {
        i: simulate_vm(f"{i:08x}-0000-4000-8000-000000000000", ts, 2, 2048) for i in range(1, n + 1)
    }


def bench_ingest() -> None:
    from metrics.store import MemoryBackend, MetricStore, RedisBackend, bytes_per_object

    sizes = bytes_per_object("vm")
    header("history: bytes per VM (fixed, whatever the age)")
    for tier in ("s10", "m1", "h1", "d1"):
        figure(f"ring {tier}", sizes[tier], "B")
    figure("per VM, all tiers", sizes["total"], "B")
    figure(f"{VMS:,} VMs, all tiers", sizes["total"] * VMS / 2**30, "GiB")
    persisted = sizes["m1"] + sizes["h1"] + sizes["d1"]
    figure("per VM in the database checkpoint (m1+h1+d1)", persisted, "B")

    header(f"history: ingest of one interval for {VMS:,} VMs")
    t = time.perf_counter()
    points = [_points(VMS, T_ALIGNED + 10 * r) for r in range(3)]
    note(f"simulated the points in {time.perf_counter() - t:.1f} s (not part of the ingest)")

    backends = [("memory", MemoryBackend())]
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        backends.append(("redis", RedisBackend(redis_url, f"paddock:bench:{os.getpid()}:")))
    else:
        note("REDIS_URL not set: the Redis figures are skipped")
    for name, backend in backends:
        store = MetricStore(backend, persist=False)
        try:
            times, written = [], 0
            for r in range(3):  # the first interval also seeds the writer's current rows
                t = time.perf_counter()
                written = store.ingest("vm", T_ALIGNED + 10 * r, points[r])
                times.append(time.perf_counter() - t)
            figure(f"{name}: first interval (seeding the current rows)", times[0], "s")
            figure(f"{name}: steady interval", min(times[1:]), "s")
            figure(f"{name}: per VM", min(times[1:]) / VMS * 1e6, "µs")
            figure(f"{name}: bytes written per interval", written / 2**20, "MiB")
            figure(f"{name}: bytes written per VM per interval", written / VMS, "B", 0)
            figure(f"{name}: writes per interval", VMS * 5, "", 0)  # 4 rings + the latest row
        finally:
            backend.clear()

    header("history: reads")
    store = MetricStore(MemoryBackend(), persist=False)
    for i in range(1440):  # a full day ring, one point a minute
        store.ingest("vm", T_ALIGNED + 60 * i, {1: {"cpu_percent": float(i % 100)}})
    now = T_ALIGNED + 60 * 1439
    for range_name in ("hour", "day", "month"):
        samples = []
        for _ in range(20):
            t = time.perf_counter()
            store.series("vm", 1, range_name, now=now)
            samples.append(time.perf_counter() - t)
        _fmt_ms(f"series {range_name}", samples)


def bench_checkpoint() -> None:
    import random

    from django.db import connection

    from metrics.store import Layout, MemoryBackend, MetricStore, ring_key

    header(f"history: database checkpoint of {CHECKPOINT_VMS:,} VMs' full rollup rings")
    backend = MemoryBackend()
    store = MetricStore(backend)
    rnd = random.Random(1)
    blobs = {}
    for i in range(1, CHECKPOINT_VMS + 1):
        for tier in ("m1", "h1", "d1"):
            blobs[ring_key("vm", i, tier)] = rnd.randbytes(Layout.of("vm", tier).size)
            store._dirty.add(("vm", i, tier))
    backend.put_many(blobs)
    written = sum(len(b) for b in blobs.values())
    t = time.perf_counter()
    rings = store.checkpoint(force=True)
    took = time.perf_counter() - t
    with connection.cursor() as cur:
        cur.execute("SELECT pg_total_relation_size('metrics_metricring')")
        table = cur.fetchone()[0]
    figure("rings written", rings)
    figure("bytes written", written / 2**20, "MiB")
    figure("time", took, "s")
    figure("table size on disk", table / 2**20, "MiB")
    figure(f"extrapolated to {VMS:,} VMs", took * VMS / CHECKPOINT_VMS, "s", 0)


def main() -> None:
    with BenchDatabase() as db, bench_environment(db):
        import importlib

        if "metrics" not in importlib.import_module("paddock.settings").INSTALLED_APPS:
            os.environ["DJANGO_SETTINGS_MODULE"] = "metrics.tests_settings"
        # The collector and the store are modules of the metrics app: Django comes first.
        setup_django_and_migrate()
        if os.environ.get("BENCH_METRICS_SKIP_LIBVIRT") != "1":
            bench_collection()
        bench_ingest()
        bench_checkpoint()


if __name__ == "__main__":
    run_main(main)
