"""The metrics collector: one bulk stats call per host per interval, rates derived from counters.

For a real host each round is

* one ``getAllDomainStats(STATE|CPU_TOTAL|BALLOON|VCPU|INTERFACE|BLOCK, NOWAIT)`` for every
  domain at once (never a call per domain),
* ``getCPUStats``, ``getMemoryStats`` and ``getFreePages`` for the host, ``/proc/loadavg``
  (``os.getloadavg``) only when the host is this machine,
* one ``info()`` per active storage pool;

the raw counters are kept in this process until the next round, and rates come from the
difference (a counter that went down, e.g. a restarted domain, gives no rate that round).

A test-driver host reports only domain state, so its metrics come from :func:`simulate_host`:
smooth per-VM curves derived from the VM's UUID and the time (no state kept), marked
``simulated``.

Points go to the metric store (``metrics.store``) and to the channel layer, group
``metrics.vm.<id>`` / ``metrics.host.<id>`` / ``metrics.pool.<id>``, as
``{"type": "paddock.event", "event": {"type": "metrics", "object", "id", "ts", "values"}}``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field

import libvirt

from hosts.driver.connection import (
    HostConnectError,
    get_connection,
    libvirt_error_message,
    parse_uri,
)

logger = logging.getLogger(__name__)

STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
STATS_FLAGS = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
DEFAULT_HUGEPAGE_KIB = (2048, 1048576)


# --- raw counters -----------------------------------------------------------------------------


def vm_counters(stats: dict) -> dict:
    """The counters and gauges of one domain out of its ``getAllDomainStats`` record."""
    out = {
        "state": stats.get("state.state"),
        "cpu_time": stats.get("cpu.time"),
        "vcpus": stats.get("vcpu.current"),
        "balloon_current": stats.get("balloon.current"),
        "balloon_rss": stats.get("balloon.rss"),
        "balloon_available": stats.get("balloon.available"),
        "balloon_unused": stats.get("balloon.unused"),
    }
    vcpus = stats.get("vcpu.maximum") or stats.get("vcpu.current") or 0
    delays = [stats.get(f"vcpu.{i}.delay") for i in range(vcpus)]
    delays = [d for d in delays if d is not None]
    out["delay"] = sum(delays) if delays else None
    for prefix, keys in (
        ("block", ("rd.bytes", "wr.bytes", "rd.reqs", "wr.reqs")),
        ("net", ("rx.bytes", "tx.bytes", "rx.pkts", "tx.pkts")),
    ):
        count = stats.get(f"{prefix}.count") or 0
        for key in keys:
            values = [stats.get(f"{prefix}.{i}.{key}") for i in range(count)]
            values = [v for v in values if v is not None]
            out[f"{prefix}_{key.replace('.', '_')}"] = sum(values) if values else None
    return out


def rate(prev: dict | None, cur: dict, key: str, dt: float) -> float | None:
    """Per-second rate of counter ``key``; ``None`` without a previous value, or when the
    counter went down (reset: the domain restarted, a device was unplugged)."""
    if prev is None or dt <= 0:
        return None
    a, b = prev.get(key), cur.get(key)
    if a is None or b is None or b < a:
        return None
    return (b - a) / dt


def derive_vm(prev: dict | None, cur: dict, dt: float, vcpus: int | None = None) -> dict:
    """Metric values of one VM from two samples ``dt`` seconds apart."""
    n = cur.get("vcpus") or vcpus or 1
    cpu = rate(prev, cur, "cpu_time", dt)
    delay = rate(prev, cur, "delay", dt)
    if prev is not None and prev.get("vcpus") not in (None, cur.get("vcpus")):
        delay = None  # vCPUs were plugged or unplugged: the sum is not one counter any more
    used = None
    if cur.get("balloon_available") is not None and cur.get("balloon_unused") is not None:
        used = (cur["balloon_available"] - cur["balloon_unused"]) * 1024
    elif cur.get("balloon_rss") is not None:
        used = cur["balloon_rss"] * 1024
    balloon = cur.get("balloon_current")
    return {
        "cpu_percent": None if cpu is None else min(100.0, cpu / 1e9 / n * 100.0),
        "vcpu_delay_percent": None if delay is None else delay / 1e9 / n * 100.0,
        "memory_used_bytes": used,
        "memory_balloon_bytes": None if balloon is None else balloon * 1024,
        "disk_read_bps": rate(prev, cur, "block_rd_bytes", dt),
        "disk_write_bps": rate(prev, cur, "block_wr_bytes", dt),
        "disk_read_iops": rate(prev, cur, "block_rd_reqs", dt),
        "disk_write_iops": rate(prev, cur, "block_wr_reqs", dt),
        "net_rx_bps": rate(prev, cur, "net_rx_bytes", dt),
        "net_tx_bps": rate(prev, cur, "net_tx_bytes", dt),
        "net_rx_pps": rate(prev, cur, "net_rx_pkts", dt),
        "net_tx_pps": rate(prev, cur, "net_tx_pkts", dt),
    }


def derive_host_cpu(prev: dict | None, cur: dict) -> tuple[float | None, float | None]:
    """Host CPU busy % and iowait % from two ``getCPUStats(ALL_CPUS)`` samples."""
    if prev is None:
        return None, None
    deltas = {k: cur.get(k, 0) - prev.get(k, 0) for k in ("kernel", "user", "idle", "iowait")}
    total = sum(deltas.values())
    if total <= 0 or any(v < 0 for v in deltas.values()):
        return None, None
    busy = deltas["kernel"] + deltas["user"]
    return 100.0 * busy / total, 100.0 * deltas["iowait"] / total


# --- one round on one host --------------------------------------------------------------------


@dataclass
class _Previous:
    mono: float
    vms: dict[str, dict] = field(default_factory=dict)  # uuid -> counters
    cpu: dict | None = None


_previous: dict[int, _Previous] = {}
_previous_lock = threading.Lock()


@dataclass
class Round:
    """What one collection on one host produced."""

    host_id: int
    ts: float
    simulated: bool
    vms: dict[int, dict] = field(default_factory=dict)
    host: dict = field(default_factory=dict)
    pools: dict[int, dict] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    bulk_calls: int = 0


def _hugepage_sizes(host) -> list[int]:
    sizes = sorted(
        {
            int(hp.get("size_kib"))
            for cell in host.numa_cells or []
            for hp in cell.get("hugepages", [])
            if hp.get("size_kib") and int(hp.get("size_kib")) > 4
        }
    )
    return sizes or list(DEFAULT_HUGEPAGE_KIB)


def _collect_real(host, conn, now: float) -> Round:
    from hosts.models import StoragePool
    from vms.models import VirtualMachine

    mono = time.monotonic()
    rnd = Round(host_id=host.pk, ts=now, simulated=False)
    records = conn.getAllDomainStats(STATS, STATS_FLAGS)
    rnd.bulk_calls = 1
    inventory = {
        str(u).replace("-", ""): (pk, vcpus)
        for pk, u, vcpus in VirtualMachine.objects.filter(host=host, gone=False).values_list(
            "pk", "uuid", "vcpus"
        )
    }
    with _previous_lock:
        prev = _previous.get(host.pk)
    dt = (mono - prev.mono) if prev else 0.0
    counters: dict[str, dict] = {}
    running = 0
    for dom, stats in records:
        uuid = dom.UUIDString().replace("-", "")
        cur = vm_counters(stats)
        counters[uuid] = cur
        if cur["state"] != libvirt.VIR_DOMAIN_RUNNING:
            continue
        running += 1
        known = inventory.get(uuid)
        if known is None:
            continue  # not imported yet: the next sync brings it
        rnd.vms[known[0]] = derive_vm(prev.vms.get(uuid) if prev else None, cur, dt, known[1])

    # The host itself.
    cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
    busy, iowait = derive_host_cpu(prev.cpu if prev else None, cpu)
    mem = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
    total = mem.get("total")
    used = None
    if total is not None:
        used = (total - mem.get("free", 0) - mem.get("buffers", 0) - mem.get("cached", 0)) * 1024
    load = (None, None, None)
    if parse_uri(host.uri).kind == "local":
        try:
            load = os.getloadavg()
        except OSError:
            pass
    cells = len(host.numa_cells or []) or max(1, conn.getInfo()[4])
    hugepages_free = None
    per_node: dict[str, dict[str, int]] = {}
    try:
        free = conn.getFreePages(_hugepage_sizes(host), 0, cells)
        hugepages_free = 0
        for cell, sizes in free.items():
            per_node[str(cell)] = {str(size): count for size, count in sizes.items()}
            hugepages_free += sum(size * 1024 * count for size, count in sizes.items())
    except libvirt.libvirtError as exc:
        logger.debug("free pages of %s: %s", host.name, libvirt_error_message(exc))
    rnd.host = {
        "cpu_percent": busy,
        "iowait_percent": iowait,
        "memory_used_bytes": used,
        "memory_total_bytes": None if total is None else total * 1024,
        "load1": load[0],
        "load5": load[1],
        "load15": load[2],
        "hugepages_free_bytes": hugepages_free,
        "vms_running": running,
    }
    rnd.extra["hugepages_free"] = per_node

    # Pools: one info() each.
    pool_ids = dict(StoragePool.objects.filter(host=host, gone=False).values_list("name", "pk"))
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        pk = pool_ids.get(pool.name())
        if pk is None:
            continue
        try:
            _state, capacity, allocation, available = pool.info()
        except libvirt.libvirtError:
            continue
        rnd.pools[pk] = _pool_values(capacity, allocation, available)

    with _previous_lock:
        _previous[host.pk] = _Previous(mono=mono, vms=counters, cpu=cpu)
    return rnd


def _pool_values(capacity: int, allocation: int, available: int) -> dict:
    return {
        "used_percent": 100.0 * allocation / capacity if capacity else None,
        "capacity_bytes": capacity,
        "allocation_bytes": allocation,
        "available_bytes": available,
    }


# --- the simulator ----------------------------------------------------------------------------


def _unit(*parts) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def simulate_vm(uuid: str, ts: float, vcpus: int = 1, memory_mib: int = 1024) -> dict:
    """Plausible values for a running VM at ``ts``: a slow daily-ish wave, a faster ripple and
    a little noise, all derived from the UUID (the same VM always looks the same)."""
    seed = int(str(uuid).replace("-", "")[:8] or "0", 16)
    phase = (seed % 1000) / 1000.0 * 2 * math.pi
    period = 900 + seed % 2700
    base = 5 + seed % 35
    amp = 4 + (seed >> 8) % 25
    tick = int(ts) // 10
    noise = _unit(seed, tick) * 2 - 1
    cpu = base + amp * math.sin(2 * math.pi * ts / period + phase) + 3 * noise
    cpu += 10 * max(0.0, math.sin(2 * math.pi * ts / 86400 + phase))
    cpu = min(100.0, max(0.0, cpu))
    delay = max(0.0, cpu * (0.004 + (seed % 9) / 250) + 0.3 * noise)
    mem = memory_mib * 1048576
    used = mem * (0.35 + 0.4 * ((seed >> 4) % 100) / 100 + 0.03 * math.sin(ts / 600 + phase))
    io = cpu / 100.0
    disk_r = max(0.0, (2 + seed % 20) * 1048576 * io * (0.6 + 0.4 * _unit(seed, "r", tick)))
    disk_w = max(0.0, (1 + seed % 12) * 1048576 * io * (0.6 + 0.4 * _unit(seed, "w", tick)))
    net_rx = max(0.0, (1 + seed % 30) * 262144 * io * (0.5 + 0.5 * _unit(seed, "rx", tick)))
    net_tx = max(0.0, (1 + seed % 18) * 262144 * io * (0.5 + 0.5 * _unit(seed, "tx", tick)))
    return {
        "cpu_percent": cpu,
        "vcpu_delay_percent": delay,
        "memory_used_bytes": min(used, mem),
        "memory_balloon_bytes": mem,
        "disk_read_bps": disk_r,
        "disk_write_bps": disk_w,
        "disk_read_iops": disk_r / 16384,
        "disk_write_iops": disk_w / 8192,
        "net_rx_bps": net_rx,
        "net_tx_bps": net_tx,
        "net_rx_pps": net_rx / 900,
        "net_tx_pps": net_tx / 700,
    }


def simulate_host(host, now: float) -> Round:
    from hosts.models import StoragePool
    from vms.choices import VMState
    from vms.models import VirtualMachine

    rnd = Round(host_id=host.pk, ts=now, simulated=True)
    rows = VirtualMachine.objects.filter(host=host, gone=False, state=VMState.RUNNING).values_list(
        "pk", "uuid", "vcpus", "memory_mib"
    )
    busy_cpus = 0.0
    used = 0
    for pk, uuid, vcpus, memory_mib in rows:
        values = simulate_vm(str(uuid), now, vcpus or 1, memory_mib or 1024)
        rnd.vms[pk] = values
        busy_cpus += values["cpu_percent"] / 100 * (vcpus or 1)
        used += values["memory_balloon_bytes"]
    cpus = host.cpus or 1
    total = (host.memory_mib or 0) * 1048576 or None
    hugepages = 0
    per_node: dict[str, dict[str, int]] = {}
    for cell in host.numa_cells or []:
        for hp in cell.get("hugepages", []):
            size = int(hp.get("size_kib") or 0)
            if size > 4:
                per_node.setdefault(str(cell.get("id")), {})[str(size)] = int(hp.get("free") or 0)
                hugepages += size * 1024 * int(hp.get("free") or 0)
    seed = host.pk
    rnd.host = {
        "cpu_percent": min(100.0, 100.0 * busy_cpus / cpus + 2 + 2 * _unit(seed, int(now) // 10)),
        "iowait_percent": 0.5 + _unit(seed, "io", int(now) // 10),
        "memory_used_bytes": min(total, used + 2 * 1073741824) if total else used,
        "memory_total_bytes": total,
        "load1": busy_cpus * (0.9 + 0.2 * _unit(seed, "l1", int(now) // 10)),
        "load5": busy_cpus,
        "load15": busy_cpus,
        "hugepages_free_bytes": hugepages,
        "vms_running": len(rnd.vms),
    }
    rnd.extra["hugepages_free"] = per_node
    for pk, capacity, allocation, available in StoragePool.objects.filter(
        host=host, gone=False
    ).values_list("pk", "capacity", "allocation", "available"):
        rnd.pools[pk] = _pool_values(capacity, allocation, available)
    return rnd


# --- collect, store, publish ------------------------------------------------------------------


def collect_host(host, *, conn=None, now: float | None = None, store=None, publish: bool = True):
    """One round on ``host``: collect (or simulate), store the points, push them to the
    subscribed browsers. Returns the :class:`Round`. Raises ``HostConnectError`` when a real
    host does not answer."""
    from .store import get_store

    now = time.time() if now is None else now
    if host.simulated or parse_uri(host.uri).simulated:
        rnd = simulate_host(host, now)
    else:
        if conn is None:
            conn = get_connection(host)
        try:
            rnd = _collect_real(host, conn, now)
        except libvirt.libvirtError as exc:
            raise HostConnectError(libvirt_error_message(exc)) from None
    store = store or get_store()
    store.ingest("vm", now, rnd.vms)
    store.ingest("host", now, {host.pk: rnd.host})
    store.ingest("pool", now, rnd.pools)
    if publish:
        _publish(rnd)
    return rnd


def _publish(rnd: Round) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    ts = int(rnd.ts)
    messages = [("host", rnd.host_id, rnd.host)]
    messages += [("vm", pk, values) for pk, values in rnd.vms.items()]
    messages += [("pool", pk, values) for pk, values in rnd.pools.items()]

    async def send_all():
        for kind, pk, values in messages:
            event = {
                "type": "metrics",
                "object": kind,
                "id": pk,
                "ts": ts,
                "simulated": rnd.simulated,
                "values": {
                    k: (round(v, 3) if isinstance(v, float) else v) for k, v in values.items()
                },
            }
            await layer.group_send(
                f"metrics.{kind}.{pk}", {"type": "paddock.event", "event": event}
            )

    from asgiref.sync import async_to_sync

    try:
        async_to_sync(send_all)()
    except Exception:
        logger.warning("could not publish metrics of host %s", rnd.host_id, exc_info=True)


def collect_all(now: float | None = None) -> int:
    """One round on every online host; returns the hosts collected. Hosts the reconcile loop
    marked offline are left to it: waiting here for their connect timeout would delay every
    other host's round."""
    from hosts.choices import HostStatus
    from hosts.models import Host

    count = 0
    for host in Host.objects.filter(status=HostStatus.ONLINE).order_by("pk"):
        try:
            collect_host(host, now=now)
            count += 1
        except HostConnectError as exc:
            logger.info("metrics of host %s skipped: %s", host.name, exc)
        except Exception:
            logger.exception("metrics of host %s failed", host.name)
    return count


def prune_orphans(store=None) -> int:
    """Drop the rings of VMs, hosts and pools that no longer exist in the inventory."""
    from hosts.models import Host, StoragePool

    from .store import get_store

    store = store or get_store()
    from vms.models import VirtualMachine

    dropped = 0
    for kind, model in (("vm", VirtualMachine), ("host", Host), ("pool", StoragePool)):
        ids = set(store.backend.get_latest(kind))
        if not ids:
            continue
        existing = set(model.objects.filter(pk__in=ids).values_list("pk", flat=True))
        orphans = ids - existing
        if orphans:
            store.forget(kind, orphans)
            dropped += len(orphans)
    return dropped


def interval() -> float:
    from django.conf import settings

    value = getattr(settings, "PADDOCK", {}).get("METRICS_INTERVAL")
    if value is None:
        value = os.environ.get("PADDOCK_METRICS_INTERVAL", "10")
    return max(1.0, float(value))


def run_forever(interval: float, stop: threading.Event | None = None) -> None:
    """Collect every online host every ``interval`` seconds until ``stop`` is set; checkpoint the
    rollups when due and drop the rings of deleted objects once an hour."""
    from django.db import close_old_connections

    from .store import get_store

    stop = stop or threading.Event()
    last_prune = time.monotonic()
    while not stop.is_set():
        close_old_connections()
        started = time.monotonic()
        try:
            collect_all()
            get_store().checkpoint()
            if started - last_prune > 3600:
                prune_orphans()
                last_prune = started
        except Exception:
            logger.exception("metrics round failed")
        stop.wait(max(0.5, interval - (time.monotonic() - started)))
    try:
        get_store().checkpoint(force=True)
    except Exception:
        logger.exception("final metrics checkpoint failed")
