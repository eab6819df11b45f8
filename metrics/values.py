"""What a metrics round produces, and how metric values derive from raw counters.

Rates come from the difference of two samples of a counter (a counter that went down, e.g. a
restarted domain, gives no rate that round). Nothing here talks to a host or the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


def pool_values(capacity: int, allocation: int, available: int) -> dict:
    return {
        "used_percent": 100.0 * allocation / capacity if capacity else None,
        "capacity_bytes": capacity,
        "allocation_bytes": allocation,
        "available_bytes": available,
    }


def live_columns(values: dict, memory_mib: int | None = None) -> tuple[float | None, float | None]:
    """The CPU % and memory % a VM's row keeps of one round's ``values``: memory used of the
    guest's current (balloon) memory, else of its configured ``memory_mib``."""
    cpu = values.get("cpu_percent")
    used = values.get("memory_used_bytes")
    total = values.get("memory_balloon_bytes") or (memory_mib or 0) * 1048576
    memory = None if used is None or not total else min(100.0, 100.0 * used / total)
    return (None if cpu is None else float(cpu)), memory
