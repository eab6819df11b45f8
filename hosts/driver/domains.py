"""Reading a host's domains: definitions, states and snapshots, as plain data.

What the inventory needs to know of a domain, without libvirt's types or constants: its UUID,
its XML, a state name, whether it is autostarted and persistent; its snapshots' XML. Reads
that race with an undefine (a domain listed, then gone before its XML is read) skip it.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

# libvirt's error, under the name the rest of Paddock catches it by.
DriverError = libvirt.libvirtError

# libvirt's state codes as names. "blocked" (waiting on a resource) and "shutdown" (being shut
# down) are domains that still run.
STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


@dataclass(frozen=True)
class DomainInfo:
    uuid: str
    xml: str
    state: str  # a name of STATE_NAMES
    reason: str  # libvirt's reason code for the state, as text
    autostart: bool
    persistent: bool


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    parent: str  # "" for a root snapshot
    xml: str
    current: bool


def state_name(code: int) -> str:
    return STATE_NAMES.get(code, "nostate")


def is_no_domain(exc: BaseException) -> bool:
    """The error says the domain does not exist (undefined, or a transient one that stopped)."""
    return isinstance(exc, libvirt.libvirtError) and (
        exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    )


def list_domains(conn: libvirt.virConnect) -> list[DomainInfo]:
    """Every domain of the host, with as few calls as libvirt allows."""
    domains = conn.listAllDomains(0)
    autostart = {
        d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
    }
    transient = {
        d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)
    }
    states = {}
    for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE):
        states[dom.UUIDString()] = (stats.get("state.state", 0), stats.get("state.reason", 0))
    result = []
    for dom in domains:
        uuid = dom.UUIDString()
        try:
            xml = dom.XMLDesc(0)
            code, reason = states.get(uuid) or dom.state()
        except libvirt.libvirtError as exc:
            if is_no_domain(exc):
                continue  # undefined while we were listing
            raise
        result.append(
            DomainInfo(
                uuid=uuid,
                xml=xml,
                state=state_name(code),
                reason=str(reason),
                autostart=uuid in autostart,
                persistent=uuid not in transient,
            )
        )
    return result


def read_domain(conn: libvirt.virConnect, uuid: str) -> DomainInfo:
    """One domain by UUID; raises :data:`DriverError` (see :func:`is_no_domain`) when absent."""
    dom = conn.lookupByUUIDString(uuid)
    xml = dom.XMLDesc(0)
    code, reason = dom.state()
    return DomainInfo(
        uuid=dom.UUIDString(),
        xml=xml,
        state=state_name(code),
        reason=str(reason),
        autostart=bool(dom.autostart()),
        persistent=bool(dom.isPersistent()),
    )


def find_domain(conn: libvirt.virConnect, uuid: str) -> DomainInfo | None:
    """One domain by UUID, or None when the host has none by that UUID."""
    try:
        return read_domain(conn, uuid)
    except libvirt.libvirtError as exc:
        if is_no_domain(exc):
            return None
        raise


def domain_state(conn: libvirt.virConnect, uuid: str) -> tuple[str, str]:
    """(state name, reason) of one domain; raises :data:`DriverError` when absent."""
    code, reason = conn.lookupByUUIDString(uuid).state()
    return state_name(code), str(reason)


def list_snapshots(conn: libvirt.virConnect, uuid: str) -> list[SnapshotInfo] | None:
    """The domain's snapshots, or None when the host's driver keeps none."""
    dom = conn.lookupByUUIDString(uuid)
    try:
        snaps = dom.listAllSnapshots(0)
    except libvirt.libvirtError:
        return None
    try:
        current = dom.snapshotCurrent(0).getName()
    except libvirt.libvirtError:
        current = ""
    result = []
    for snap in snaps:
        try:
            parent = snap.getParent(0).getName()
        except libvirt.libvirtError:
            parent = ""
        name = snap.getName()
        result.append(
            SnapshotInfo(name=name, parent=parent, xml=snap.getXMLDesc(0), current=name == current)
        )
    return result
