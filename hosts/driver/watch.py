"""Event subscriptions for the host watchers: libvirt's callbacks as plain Python calls.

:func:`open_watch_connection` opens a connection of its own, under the host call deadline
(``hosts.driver.connection.open_connection``: its calls have deadlines too), with keepalive;
:func:`subscribe` registers callbacks for the domain events the inventory follows (lifecycle,
reboot, device added/removed, job completed), storage pool and network lifecycle, and, on a
connection of its own, the close callback. The callbacks get plain data: a domain's UUID and
an event name, never libvirt objects or constants. They run on libvirt's event thread, which
must be running (``hosts.driver.events.ensure_event_loop``) before a connection is opened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import libvirt

from .connection import (
    DriverError,
    Guarded,
    HostCallTimeout,
    HostConnectError,
    close_connection,
    libvirt_error_message,
    open_connection,
)

logger = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3

# Lifecycle events by name; the other domain events are named after their kind.
LIFECYCLE_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}

_DOMAIN_EVENTS = (
    (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, "lifecycle"),
    (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, "reboot"),
    (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, "device-added"),
    (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, "device-removed"),
    (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, "job-completed"),
)

DomainCallback = Callable[[str, str], None]  # (uuid, event name)
ObjectCallback = Callable[[], None]
CloseCallback = Callable[[str], None]  # a message saying why


def open_watch_connection(host) -> Guarded:
    """A connection of the watcher's own to ``host``, opened under the call deadline (an
    unreachable host costs at most that long), with keepalive where the transport has it.
    Raises :class:`HostConnectError` (:class:`HostCallTimeout` when the open outlived its
    deadline) with libvirt's message."""
    conn = open_connection(host)
    try:
        conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
    except HostCallTimeout:
        close_connection(conn)
        raise
    except DriverError:
        logger.debug("keepalive not supported for %s", getattr(host, "name", host))
    return conn


def connection_alive(conn) -> bool:
    if conn is None:
        return False
    try:
        return bool(conn.isAlive())
    except Exception:  # closed (libvirtError) or the object was closed under us
        return False


class Subscription:
    """Callbacks registered on one connection; :meth:`cancel` takes them off again."""

    def __init__(self, conn, own: bool) -> None:
        self.conn = conn
        self.own = own
        self._ids: list[tuple[str, int]] = []
        self._close_registered = False

    def cancel(self, close: bool = True) -> None:
        """Deregister every callback; close the connection if it is the watcher's own."""
        conn, ids, self._ids = self.conn, self._ids, []
        for kind, callback_id in ids:
            try:
                if kind == "domain":
                    conn.domainEventDeregisterAny(callback_id)
                elif kind == "pool":
                    conn.storagePoolEventDeregisterAny(callback_id)
                else:
                    conn.networkEventDeregisterAny(callback_id)
            except Exception:
                pass  # the connection is gone already
        if not self.own:
            return
        if self._close_registered:
            self._close_registered = False
            try:
                conn.unregisterCloseCallback()
            except Exception:
                pass
        if close:
            try:
                close_connection(conn)  # under a short deadline: a silent host cannot hold us
            except Exception:
                pass  # closed already


def subscribe(
    conn,
    *,
    own: bool,
    on_domain: DomainCallback,
    on_pools: ObjectCallback,
    on_networks: ObjectCallback,
    on_close: CloseCallback | None = None,
) -> Subscription:
    """Register the watcher's callbacks; raises :class:`HostConnectError` if libvirt refuses.

    ``own`` says the connection is the watcher's alone (it may be closed and gets a close
    callback); a shared connection (a test-driver host's) is left open.
    """
    sub = Subscription(conn, own)

    def domain_cb(kind: str):
        def callback(_conn, dom, *args) -> None:
            name = LIFECYCLE_NAMES.get(args[0], "changed") if kind == "lifecycle" else kind
            on_domain(dom.UUIDString(), name)

        return callback

    def object_cb(target: ObjectCallback):
        def callback(_conn, _obj, _event, _detail, _opaque) -> None:
            target()

        return callback

    try:
        for event_id, kind in _DOMAIN_EVENTS:
            sub._ids.append(
                ("domain", conn.domainEventRegisterAny(None, event_id, domain_cb(kind), None))
            )
        sub._ids.append(
            (
                "pool",
                conn.storagePoolEventRegisterAny(
                    None, libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, object_cb(on_pools), None
                ),
            )
        )
        sub._ids.append(
            (
                "network",
                conn.networkEventRegisterAny(
                    None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, object_cb(on_networks), None
                ),
            )
        )
        if own and on_close is not None:

            def closed(_conn, reason, _opaque) -> None:
                on_close(f"Connection to the host closed (reason {reason}).")

            conn.registerCloseCallback(closed, None)
            sub._close_registered = True
    except HostConnectError:  # a call outlived its deadline (HostCallTimeout)
        sub.cancel()
        raise
    except libvirt.libvirtError as exc:  # DriverError through a guarded connection
        sub.cancel()
        raise HostConnectError(libvirt_error_message(exc)) from None
    return sub
