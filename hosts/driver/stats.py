"""Bulk statistics of a host, for the metrics collector: the libvirt side of one round.

One ``getAllDomainStats`` call answers for every domain at once (never a call per domain), with
``NOWAIT`` so a domain busy with a job does not hold the round; the host's CPU and memory
counters, its free hugepages and the usage of its active pools follow. A failed call raises
``HostConnectError`` with libvirt's message; free pages and a pool's ``info()`` are optional
(``None`` / left out).
"""

from __future__ import annotations

import functools
import ipaddress
import logging

import libvirt

from .connection import HostConnectError, libvirt_error_message

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
# The ``state.state`` of a running domain in a stats record.
RUNNING = libvirt.VIR_DOMAIN_RUNNING


def _host_call(fn):
    """libvirt errors of ``fn`` become ``HostConnectError`` with libvirt's own message."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except libvirt.libvirtError as exc:
            raise HostConnectError(libvirt_error_message(exc)) from None

    return call


@_host_call
def domain_stats(conn) -> list[tuple[str, dict]]:
    """``(uuid without dashes, stats record)`` of every domain, from one bulk call."""
    records = conn.getAllDomainStats(STATS, STATS_FLAGS)
    return [(dom.UUIDString().replace("-", ""), stats) for dom, stats in records]


@_host_call
def host_cpu(conn) -> dict:
    """The host's CPU time counters (ns), all CPUs together: kernel, user, idle, iowait."""
    return conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)


@_host_call
def host_memory(conn) -> dict:
    """The host's memory (KiB), all cells together: total, free, buffers, cached."""
    return conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)


@_host_call
def numa_nodes(conn) -> int:
    """The number of NUMA nodes the host reports (at least 1)."""
    return max(1, conn.getInfo()[4])


def free_pages(conn, sizes_kib: list[int], cells: int, host_name: str = "") -> dict | None:
    """``{cell: {size_kib: free pages}}`` of the first ``cells`` cells, or None when the host
    cannot tell."""
    try:
        return conn.getFreePages(sizes_kib, 0, cells)
    except libvirt.libvirtError as exc:
        logger.debug("free pages of %s: %s", host_name, libvirt_error_message(exc))
        return None


@_host_call
def active_pools(conn, names) -> dict[str, tuple[int, int, int]]:
    """``{pool name: (capacity, allocation, available)}`` in bytes of the active pools among
    ``names`` (one ``info()`` each); a pool whose ``info()`` fails is left out."""
    usage = {}
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        if pool.name() not in names:
            continue
        try:
            _state, capacity, allocation, available = pool.info()
        except libvirt.libvirtError:
            continue
        usage[pool.name()] = (capacity, allocation, available)
    return usage


# The virtio-serial channel a QEMU guest agent answers on, as a domain's XML names it.
AGENT_CHANNEL = "org.qemu.guest_agent.0"


def _addresses(interfaces: dict) -> list[str]:
    """The addresses of ``interfaceAddresses``' answer, loopback and link-local left out."""
    out: list[str] = []
    for name, iface in sorted((interfaces or {}).items()):
        if name == "lo":
            continue
        for entry in iface.get("addrs") or []:
            try:
                addr = ipaddress.ip_address(str(entry.get("addr", "")).split("%")[0])
            except ValueError:
                continue
            if addr.is_loopback or addr.is_link_local:
                continue
            if str(addr) not in out:
                out.append(str(addr))
    return out


def guest_addresses(conn, uuids) -> dict[str, list[str]]:
    """``{uuid without dashes: addresses}`` the guest agent of each domain in ``uuids`` reports
    (``interfaceAddresses`` with the agent as source, one call each under the connection's
    deadline). A domain whose agent is absent or does not answer gets ``[]``; once the host
    itself stops answering in time, the rest get ``[]`` too, so the round goes on."""
    out: dict[str, list[str]] = {}
    silent = False
    for uuid in uuids:
        key = str(uuid).replace("-", "")
        out[key] = []
        if silent:
            continue
        try:
            dom = conn.lookupByUUIDString(str(uuid))
            out[key] = _addresses(
                dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
            )
        except HostConnectError as exc:  # the call's deadline passed
            logger.info("guest agents of %s skipped: %s", uuid, exc)
            silent = True
        except libvirt.libvirtError as exc:
            logger.debug("guest agent of %s: %s", uuid, libvirt_error_message(exc))
    return out
