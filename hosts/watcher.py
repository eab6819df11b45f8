"""Host watchers: libvirt events turned into inventory updates and live messages.

One :class:`HostWatcher` per host holds a libvirt connection with an event loop and keepalive,
and registers callbacks for domain lifecycle, device added/removed, job completed, reboot,
storage pool lifecycle and network lifecycle events. The callbacks run on libvirt's event
thread and only queue what happened; a worker thread per host does the database work:

* a domain event re-reads that one domain (``vms.sync.refresh_vm``), imports a domain the
  inventory does not know yet, or marks an undefined domain gone; a state change made on the
  host becomes the observed and the desired state (unless a Paddock task holds the VM, which
  then owns its desired state), exactly as the full sync does;
* a pool or network event re-reads the host's pools or networks;

and sends ``vm.updated`` / ``host.updated`` after the transaction commits (``panel.events``).

When the connection dies (keepalive, close callback, or a failed call) the watcher reconnects;
while it cannot, it marks the host offline with libvirt's message and retries with backoff
(1, 2, 4 ... 30 s). Once connected again it runs a full reconcile, since events may have been
missed meanwhile. The periodic reconcile
(``hosts.reconcile``) stays as the safety net.

A test-driver host (``test:///...``) keeps its simulated state per connection, so its watcher
registers on the process's shared connection (``hosts.driver.connection.get_connection``); its events
are the ones caused through that connection, i.e. by this process.

:class:`WatcherManager` keeps one watcher per host row, starting watchers for hosts added later
and stopping those of removed hosts; ``manage.py watch_hosts`` and the embedded default run it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import libvirt
from django.db import IntegrityError, close_old_connections, connections, transaction
from django.utils import timezone

from panel import events

from .choices import HostStatus
from .driver.connection import (
    HostConnectError,
    effective_uri,
    get_connection,
    libvirt_error_message,
    parse_uri,
)
from .models import Host

logger = logging.getLogger(__name__)

BACKOFF_MAX = 30.0
LIVENESS_SECONDS = 1.0

# --- libvirt's event loop: once per process ----------------------------------------------------

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and run it in a daemon thread.

    Must happen before the watchers' connections are opened (keepalive and the remote
    driver's event dispatch need it). Safe to call any number of times.
    """
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # pragma: no cover - a callback raised; keep the loop going
                    logger.exception("libvirt event loop iteration failed")

        _loop_thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        _loop_thread.start()


# --- what the callbacks queue ------------------------------------------------------------------

DOMAIN_EVENT_NAMES = {
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


# Events after which a domain is newly there: on another host than its VM row's, a move.
APPEARED_EVENTS = frozenset({"defined", "started", "resumed"})


@dataclass
class _Batch:
    """Events drained from the queue in one go; repeated events for one object collapse."""

    domains: dict[str, str] = field(default_factory=dict)  # uuid -> last event name
    pools: bool = False
    networks: bool = False
    reconcile: bool = False


class HostWatcher:
    """Watch one host; :meth:`start` runs it in threads until :meth:`stop`."""

    def __init__(self, host_id: int) -> None:
        self.host_id = host_id
        self.host: Host | None = None
        self.conn: libvirt.virConnect | None = None
        self.ready = threading.Event()  # set while callbacks are registered
        self.stats = {"connects": 0, "reconciles": 0, "events": 0, "applied": 0, "failures": 0}
        self.last_error = ""
        self._stop = threading.Event()
        self._dead = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._generation = 0
        self._callback_ids: list[tuple[str, int]] = []
        self._own_connection = True
        self._threads: list[threading.Thread] = []

    # -- threads ------------------------------------------------------------------------------

    def start(self) -> HostWatcher:
        ensure_event_loop()
        self._threads = [
            threading.Thread(target=self._run, name=f"watch-host-{self.host_id}", daemon=True),
            threading.Thread(target=self._work, name=f"apply-host-{self.host_id}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._dead.set()
        self._queue.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _run(self) -> None:
        """Connect, watch until the connection dies, reconnect with backoff; until stopped."""
        delay = 1.0
        try:
            while not self._stop.is_set():
                close_old_connections()
                try:
                    host = Host.objects.get(pk=self.host_id)
                except Host.DoesNotExist:
                    return
                self.host = host
                try:
                    self._connect(host)
                except HostConnectError as exc:
                    self._mark_offline(host, str(exc))
                    self._stop.wait(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                delay = 1.0
                # Events may have been missed while no callback was registered: a full
                # reconcile brings the inventory back in line (and the host back online).
                self._queue.put(("reconcile",))
                self._watch()
                self._disconnect()
                if not self._stop.is_set():
                    # Straight back to connecting: the host is marked offline only if that
                    # fails, so a dropped connection that comes back at once does not flap.
                    logger.info("host %s: connection lost: %s", host.name, self.last_error)
        finally:
            self._disconnect()
            connections.close_all()

    def _work(self) -> None:
        """Apply queued events to the inventory, off libvirt's event thread."""
        try:
            while not self._stop.is_set():
                item = self._queue.get()
                if item is None:
                    continue
                batch = _Batch()
                self._add(batch, item)
                while True:  # everything queued meanwhile, collapsed
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        self._add(batch, item)
                if self._stop.is_set():
                    return
                close_old_connections()
                try:
                    self._apply(batch)
                except libvirt.libvirtError as exc:
                    self.stats["failures"] += 1
                    self.last_error = libvirt_error_message(exc)
                    logger.warning("host %s: %s", self.host_id, self.last_error)
                    if not self._connection_alive():
                        self._dead.set()
                except Exception:
                    self.stats["failures"] += 1
                    if self._connection_alive():
                        logger.exception("host %s: applying events failed", self.host_id)
                    else:
                        # The connection went away under the call; the reconnect's full
                        # reconcile covers what these events were about.
                        self._dead.set()
        finally:
            connections.close_all()

    # -- the connection -----------------------------------------------------------------------

    def _connect(self, host: Host) -> None:
        self._dead.clear()
        self._generation += 1
        self._own_connection = not parse_uri(host.uri).simulated
        if self._own_connection:
            uri = effective_uri(host)
            try:
                conn = libvirt.open(uri)
            except libvirt.libvirtError as exc:
                raise HostConnectError(libvirt_error_message(exc)) from None
            try:
                conn.setKeepAlive(5, 3)
            except libvirt.libvirtError:
                logger.debug("keepalive not supported for %s", host.name)
        else:
            # The test driver's state lives in the connection: use the process's shared one.
            conn = get_connection(host)
        self.conn = conn
        try:
            self._register(conn, self._generation)
        except libvirt.libvirtError as exc:
            self._disconnect()
            raise HostConnectError(libvirt_error_message(exc)) from None
        self.stats["connects"] += 1
        self.last_error = ""
        self.ready.set()
        logger.info("watching host %s", host.name)

    def _register(self, conn: libvirt.virConnect, gen: int) -> None:
        def domain_cb(name: str):
            def callback(_conn, dom, *args) -> None:
                if gen != self._generation:
                    return  # a connection this watcher already left
                if name == "lifecycle":
                    name_ = DOMAIN_EVENT_NAMES.get(args[0], "changed")
                else:
                    name_ = name
                self.stats["events"] += 1
                self._queue.put(("domain", dom.UUIDString(), name_))

            return callback

        def object_cb(kind: str):
            def callback(_conn, _obj, _event, _detail, _opaque) -> None:
                if gen == self._generation:
                    self.stats["events"] += 1
                    self._queue.put((kind,))

            return callback

        ids = []
        for event_id, name in (
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, "lifecycle"),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, "reboot"),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, "device-added"),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, "device-removed"),
            (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, "job-completed"),
        ):
            ids.append(
                ("domain", conn.domainEventRegisterAny(None, event_id, domain_cb(name), None))
            )
        ids.append(
            (
                "pool",
                conn.storagePoolEventRegisterAny(
                    None, libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, object_cb("pools"), None
                ),
            )
        )
        ids.append(
            (
                "network",
                conn.networkEventRegisterAny(
                    None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, object_cb("networks"), None
                ),
            )
        )
        self._callback_ids = ids
        if self._own_connection:

            def closed(_conn, reason, _opaque) -> None:
                if gen == self._generation:
                    self.last_error = f"Connection to the host closed (reason {reason})."
                    self._dead.set()

            conn.registerCloseCallback(closed, None)

    def _connection_alive(self) -> bool:
        conn = self.conn
        if conn is None:
            return False
        try:
            return bool(conn.isAlive())
        except Exception:  # closed (libvirtError) or the object was closed under us
            return False

    def _watch(self) -> None:
        """Until stopped or the connection dies: keepalive and the close callback set
        ``_dead``; a closed connection object is noticed by the liveness check."""
        while not self._stop.is_set():
            if self._dead.wait(LIVENESS_SECONDS):
                return
            if not self._connection_alive():
                self.last_error = self.last_error or "Connection to the host lost."
                return

    def _disconnect(self) -> None:
        self.ready.clear()
        conn, self.conn = self.conn, None
        self._generation += 1  # callbacks of the old connection are ignored from now on
        ids, self._callback_ids = self._callback_ids, []
        if conn is None:
            return
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
        if self._own_connection:
            try:
                conn.unregisterCloseCallback()
            except Exception:
                pass
            try:
                conn.close()
            except Exception:
                pass

    def _mark_offline(self, host: Host, message: str) -> None:
        self.last_error = message
        changed = Host.objects.filter(pk=host.pk).exclude(
            status=HostStatus.OFFLINE, last_error=message[:2000]
        )
        if changed.update(status=HostStatus.OFFLINE, last_error=message[:2000]):
            host.status, host.last_error = HostStatus.OFFLINE, message[:2000]
            events.host_changed(host, event="offline")
            logger.info("host %s offline: %s", host.name, message)

    # -- applying events ----------------------------------------------------------------------

    @staticmethod
    def _add(batch: _Batch, item: tuple) -> None:
        kind = item[0]
        if kind == "domain":
            batch.domains[item[1]] = item[2]
        elif kind == "pools":
            batch.pools = True
        elif kind == "networks":
            batch.networks = True
        elif kind == "reconcile":
            batch.reconcile = True

    def _apply(self, batch: _Batch) -> None:
        host = Host.objects.get(pk=self.host_id)
        conn = self.conn
        if batch.reconcile:
            from .reconcile import reconcile_host

            reconcile_host(host, publish=True)
            self.stats["reconciles"] += 1
        if conn is None:
            return
        if batch.pools or batch.networks:
            from .sync import sync_networks, sync_pools

            with transaction.atomic():
                if batch.pools:
                    sync_pools(host, conn)
                if batch.networks:
                    sync_networks(host, conn)
                changed = [
                    n for n, flag in (("pools", batch.pools), ("networks", batch.networks)) if flag
                ]
                events.host_changed(host, event="inventory", changed=changed)
        for uuid, event in batch.domains.items():
            apply_domain_event(host, conn, uuid, event)
            self.stats["applied"] += 1


def apply_domain_event(host: Host, conn: libvirt.virConnect, uuid: str, event: str) -> None:
    """Bring one domain's VM row in line with libvirt and publish ``vm.updated``."""
    try:
        _apply_domain_event(host, conn, uuid, event)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        # Undefined while it was being read (the transaction rolled back): look again, which
        # now finds it gone. Not a connection failure.
        _apply_domain_event(host, conn, uuid, event)


def _apply_domain_event(host: Host, conn: libvirt.virConnect, uuid: str, event: str) -> None:
    from vms.choices import VMState
    from vms.models import VirtualMachine
    from vms.sync import moves_here, refresh_vm, state_from_libvirt

    try:
        dom = conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        dom = None  # undefined, or a transient domain that stopped
    vm = VirtualMachine.objects.filter(uuid=uuid).first()
    if vm is not None and vm.host_id != host.pk:
        # A VM is its UUID: this domain is known on another host.
        if dom is None:
            return  # a copy that left this host; the VM lives on elsewhere
        state = state_from_libvirt(dom.state()[0])
        if not moves_here(vm, state, appeared=event in APPEARED_EVENTS):
            return
        vm.host = host  # moved here: the same row, re-read from this host below
        with transaction.atomic():
            refresh_vm(vm, conn)
            if vm.lock_id is None:
                VirtualMachine.objects.filter(pk=vm.pk).update(desired_state=vm.state)
                vm.desired_state = vm.state
            events.vm_changed(vm, event="moved")
        return
    with transaction.atomic():
        if dom is None:
            if vm is None or vm.gone:
                return
            vm.gone, vm.gone_at = True, timezone.now()
            vm.state, vm.vnc_port = VMState.UNKNOWN, None
            vm.save(update_fields=["gone", "gone_at", "state", "vnc_port"])
        elif vm is None:
            # New to the inventory: imported alone (default tenant, desired state = observed),
            # as the full sync would, without re-reading every domain of the host.
            vm = import_domain(host, conn, dom)
            if vm.host_id != host.pk:
                return  # imported on its other host meanwhile; the next event decides
        elif vm.lock_id is not None:
            # A Paddock task is working on this VM and re-reads it when done: only the
            # observed state here, the task owns the rest (and the desired state).
            code, reason = dom.state()
            vm.state, vm.state_reason = state_from_libvirt(code), str(reason)
            vm.synced_at = timezone.now()
            vm.save(update_fields=["state", "state_reason", "synced_at"])
        else:
            before = vm.state
            refresh_vm(vm, conn)
            if vm.state != before:
                # A change made on the host is the new desired state, never undone.
                vm.desired_state = vm.state
                VirtualMachine.objects.filter(pk=vm.pk).update(desired_state=vm.state)
        events.vm_changed(vm, event=event)


def import_domain(host: Host, conn: libvirt.virConnect, dom: libvirt.virDomain):
    """A VM row for a domain the inventory does not know, then its devices and snapshots."""
    from panel.models import Tenant
    from vms.domxml import parse_domain
    from vms.models import VirtualMachine
    from vms.sync import _MIRRORED, refresh_vm, state_from_libvirt

    spec = parse_domain(dom.XMLDesc(0))
    code, reason = dom.state()
    state = state_from_libvirt(code)
    try:
        with transaction.atomic():
            vm = VirtualMachine.objects.create(
                host=host,
                tenant=Tenant.get_default(),
                uuid=spec.uuid,
                description=spec.description,
                state=state,
                state_reason=str(reason),
                desired_state=state,
                synced_at=timezone.now(),
                **{f: getattr(spec, f) for f in _MIRRORED},
            )
    except IntegrityError:
        # The periodic reconcile imported it meanwhile (here or on another host).
        vm = VirtualMachine.objects.get(uuid=spec.uuid)
        if vm.host_id != host.pk:
            return vm
    return refresh_vm(vm, conn)


# --- every host --------------------------------------------------------------------------------


class WatcherManager:
    """One :class:`HostWatcher` per host row: new hosts get one, removed hosts lose theirs, a
    host whose URI changed gets a fresh one."""

    def __init__(self, rescan_seconds: float = 5.0) -> None:
        self.rescan_seconds = rescan_seconds
        self.watchers: dict[int, tuple[str, HostWatcher]] = {}

    def rescan(self) -> None:
        close_old_connections()
        hosts = dict(Host.objects.values_list("pk", "uri"))
        for pk in list(self.watchers):
            uri, watcher = self.watchers[pk]
            if hosts.get(pk) != uri or not watcher.alive:
                watcher.stop()
                del self.watchers[pk]
        for pk, uri in hosts.items():
            if pk not in self.watchers:
                self.watchers[pk] = (uri, HostWatcher(pk).start())

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.rescan()
                except Exception:
                    logger.exception("host watcher rescan failed")
                stop.wait(self.rescan_seconds)
        finally:
            self.stop_all()
            connections.close_all()

    def stop_all(self) -> None:
        for _uri, watcher in self.watchers.values():
            watcher.stop()
        self.watchers.clear()


def start_watchers(stop: threading.Event, rescan_seconds: float = 5.0) -> threading.Thread:
    """The manager in a daemon thread (the embedded default and ``watch_hosts``)."""
    manager = WatcherManager(rescan_seconds)
    thread = threading.Thread(target=manager.run, args=(stop,), name="host-watchers", daemon=True)
    thread.manager = manager  # type: ignore[attr-defined]
    thread.start()
    return thread


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes (tests and benchmarks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
