"""The simulator: metrics of a test-driver host, which reports only domain state.

Smooth per-VM curves derived from the VM's UUID and the time (no state kept), marked
``simulated``; the host's values follow from its VMs, its pools' from the inventory.
"""

from __future__ import annotations

import hashlib
import math

from hosts.models import StoragePool
from vms.choices import VMState
from vms.models import VirtualMachine

from .values import Round, pool_values


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
        rnd.pools[pk] = pool_values(capacity, allocation, available)
    return rnd
