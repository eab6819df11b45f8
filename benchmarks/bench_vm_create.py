"""Time from ``POST /api/vms/`` to a domain running on the real libvirtd: one by one, 20 at once.

The production shape runs against a throwaway database and a Redis database of its own
(``PADDOCK_BENCH_REDIS_DB``, 11 unless set; emptied at the start and the end, because Celery
workers of other Paddock runs on a shared Redis database consume queues of the same names):
``manage.py demo --no-seed`` with ``DATABASE_URL`` and ``REDIS_URL`` set starts uvicorn, a
Celery worker (concurrency 2), beat and the host watcher as child processes. Once the worker
answers a broadcast ping, the script adds ``qemu:///system`` as a host through the API, as a
platform admin, and waits for its first sync. Before that it creates on libvirt a private
directory pool and a bridged network on a Linux bridge of its own, so the VMs touch nothing
else on the machine.

Each VM has 1 vCPU, 96 MiB, one new 1 GiB qcow2 disk in the private pool, one NIC on the
bridged network, BIOS firmware, ``boot: ["disk"]`` and ``start: true``. The disk is empty, so
the guest ends at SeaBIOS's "no bootable device"; running is libvirt's state, which is what is
measured. An idle guest still costs CPU (QEMU's display and USB timers, the firmware's retries),
so the script pauses each guest through libvirt as soon as it has seen it running: the figures
are about the control plane, not about guests competing with it for the two cores.

Measured:

1. **Sequential.** 20 creates one after the other: wall time from just before the POST until
   the API shows the task succeeded and the VM ``running``/``ready`` (polled every 50 ms).
2. **Concurrent.** 20 creates POSTed at the same moment from 20 threads, then one client polls
   the tenant's tasks and VMs every 50 ms: the time until all 20 are running, the errors (a
   POST that is not 202, a failed task, a VM not running within 300 s) and each VM's time.

Two creates at once come first as a warm-up (each worker process opens its libvirt
connection), not counted. For every VM the time is split with the task's timestamps and log
lines (worker side) and the libvirt lifecycle event of the domain starting (received by this
script on its own libvirt connection): request, waiting in the queue, worker preparation,
volume creation, domain definition, domain start, bookkeeping after the start, and the poll
that sees it. A failed create is described with the task's error, the VM row and what libvirt
holds; a VM the API did not show running right after its task succeeded is listed with what
the API showed meanwhile.

At the end, also on failure, Ctrl-C or SIGTERM: the panel's processes are stopped (SIGINT to
the process group the script started), every domain named ``paddockbench-<run>-*`` is
destroyed and undefined, the pool's volumes, the pool, its directory, the network and the
bridge are removed, the Redis database is emptied and the database is dropped. It needs root
(a Linux bridge, a directory under the libvirt images directory).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO_ROOT,
    BenchDatabase,
    BenchError,
    bench_environment,
    figure,
    free_port,
    header,
    note,
    run_main,
    setup_django_and_migrate,
    summary_ms,
)

URI = "qemu:///system"
IMAGES_DIR = "/var/lib/libvirt/images"
PREFIX = "paddockbench-"
SEQUENTIAL = 20
CONCURRENT = 20
WARMUP = 2
VCPUS = 1
MEMORY_MIB = 96
DISK_GIB = 1
POLL_S = 0.05
CREATE_TIMEOUT_S = 300.0
# A Redis database of the benchmark's own: Celery workers of other Paddock runs on the same
# Redis database (the test suites start some) consume queues of the same names (``paddock``,
# ``host.<id>``) and would take this run's messages, or answer its pings.
REDIS_DB = os.environ.get("PADDOCK_BENCH_REDIS_DB", "11")
PASSWORD = "bench-" + uuid.uuid4().hex

# Phases of one create, from the task's timestamps, its log lines and libvirt's start event.
PHASES = (
    ("request", "POST sent -> task row written"),
    ("queued", "task row written -> worker claims it"),
    ("prepare", "claimed -> volume creation begins"),
    ("volume", "create the qcow2 volume"),
    ("define", "define the domain"),
    ("start", "virDomainCreate -> libvirt's STARTED event"),
    ("bookkeeping", "STARTED -> task finished (storage re-sync, VM refresh, finish)"),
    ("observe", "task finished -> the poll sees it"),
)


# --- libvirt: a private pool, a bridged network, lifecycle events ----------------------------


def _pool_xml(name: str, path: str) -> str:
    from lxml import etree

    pool = etree.Element("pool", type="dir")
    etree.SubElement(pool, "name").text = name
    target = etree.SubElement(pool, "target")
    etree.SubElement(target, "path").text = path
    perms = etree.SubElement(target, "permissions")
    etree.SubElement(perms, "mode").text = "0755"
    return etree.tostring(pool).decode()


def _net_xml(name: str, bridge: str) -> str:
    from lxml import etree

    net = etree.Element("network")
    etree.SubElement(net, "name").text = name
    etree.SubElement(net, "forward", mode="bridge")
    etree.SubElement(net, "bridge", name=bridge)
    return etree.tostring(net).decode()


class Lab:
    """What this run creates on libvirt and the host; ``cleanup()`` removes all of it."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.vm_prefix = f"{PREFIX}{self.tag}-"
        self.pool_name = f"{PREFIX}pool-{self.tag}"
        self.pool_path = f"{IMAGES_DIR}/{PREFIX}{self.tag}"
        self.net_name = f"{PREFIX}net-{self.tag}"
        self.bridge = f"pdkb{self.tag}"
        self.conn = None
        self.events_conn = None
        self.pool = None
        self.net = None
        self.bridge_made = False
        self.dir_made = False
        self.started_at: dict[str, float] = {}  # domain name -> wall time of its STARTED event
        self.stopped: list[str] = []  # domains that stopped while the benchmark ran
        self._callback_id = None
        self._event_thread: threading.Thread | None = None

    def create(self) -> None:
        import libvirt

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self._start_events()
        self.conn = libvirt.open(URI)
        os.makedirs(self.pool_path, mode=0o755)
        self.dir_made = True
        os.chmod(self.pool_path, 0o755)
        self.pool = self.conn.storagePoolDefineXML(_pool_xml(self.pool_name, self.pool_path), 0)
        self.pool.create(0)
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        self.bridge_made = True
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        self.net = self.conn.networkDefineXML(_net_xml(self.net_name, self.bridge))
        self.net.create()

    def _start_events(self) -> None:
        """A second connection with libvirt's default event loop, for lifecycle events."""
        import libvirt

        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        self._event_thread = threading.Thread(target=loop, daemon=True, name="libvirt-events")
        self._event_thread.start()
        self.events_conn = libvirt.open(URI)
        self.events_conn.setKeepAlive(5, 3)

        def on_lifecycle(_conn, dom, event, _detail, _opaque) -> None:
            name = dom.name()
            if not name.startswith(self.vm_prefix):
                return
            if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
                self.started_at.setdefault(name, time.time())
            elif event in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_CRASHED):
                self.stopped.append(name)

        self._callback_id = self.events_conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle, None
        )

    def domains(self) -> list:
        return [d for d in self.conn.listAllDomains() if d.name().startswith(self.vm_prefix)]

    def pause(self, name: str) -> None:
        """Pause a guest the benchmark has seen running: an idle guest still costs CPU."""
        import libvirt

        try:
            self.conn.lookupByName(name).suspend()
        except libvirt.libvirtError as exc:
            raise BenchError(f"could not pause {name}: {exc}") from None

    def cleanup(self) -> list[str]:
        """Remove everything this run made; returns what could not be removed."""
        import libvirt

        problems: list[str] = []

        def attempt(what: str, fn) -> None:
            try:
                fn()
            except Exception as exc:  # keep going: remove as much as possible
                problems.append(f"{what}: {exc}")

        if self.events_conn is not None:
            if self._callback_id is not None:
                attempt("event callback", lambda: self.events_conn.domainEventDeregisterAny(
                    self._callback_id))  # fmt: skip
            attempt("event connection", self.events_conn.close)
            self.events_conn = None
        if self.conn is None:
            attempt("libvirt connection", lambda: setattr(self, "conn", libvirt.open(URI)))
        if self.conn is not None:
            flags = (
                libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            )
            try:
                doms = self.domains()
            except libvirt.libvirtError as exc:
                doms = []
                problems.append(f"list domains: {exc}")
            for dom in doms:
                name = dom.name()
                if dom.isActive():
                    attempt(f"destroy {name}", dom.destroy)
                attempt(f"undefine {name}", lambda d=dom: d.undefineFlags(flags))
            pool = self.pool
            if pool is None:
                try:
                    pool = self.conn.storagePoolLookupByName(self.pool_name)
                except libvirt.libvirtError:
                    pool = None
            if pool is not None:
                if pool.isActive():
                    attempt("refresh pool", lambda: pool.refresh(0))
                    for vol in pool.listAllVolumes(0):
                        attempt(f"delete volume {vol.name()}", lambda v=vol: v.delete(0))
                    attempt("stop pool", pool.destroy)
                attempt("undefine pool", pool.undefine)
            net = self.net
            if net is None:
                try:
                    net = self.conn.networkLookupByName(self.net_name)
                except libvirt.libvirtError:
                    net = None
            if net is not None:
                if net.isActive():
                    attempt("stop network", net.destroy)
                attempt("undefine network", net.undefine)
            attempt("libvirt connection", self.conn.close)
            self.conn = None
        if self.bridge_made:
            res = subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, text=True)
            if res.returncode != 0:
                problems.append(f"ip link del {self.bridge}: {res.stderr.strip()}")
            self.bridge_made = False
        if self.dir_made:
            shutil.rmtree(self.pool_path, ignore_errors=True)
            if os.path.exists(self.pool_path):
                problems.append(f"directory {self.pool_path} is still there")
            self.dir_made = False
        return problems


# --- the panel in production shape -----------------------------------------------------------


class Panel:
    """``manage.py demo --no-seed`` in a process group of its own: web, worker, beat, watcher."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 90.0) -> None:
        import httpx

        cmd = [
            sys.executable, "manage.py", "demo", "--no-seed",
            "--bind", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
            "PADDOCK_DEMO": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"demo exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                httpx.get(self.base_url + "/api/health/", timeout=2.0)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise BenchError(f"the panel did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _group_alive(self, pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            pgid = proc.pid  # the session leader: its group holds only what it started
            if proc.poll() is None:
                os.killpg(pgid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            deadline = time.monotonic() + 15
            while self._group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if self._group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=15)
        if self._log is not None:
            self._log.close()
            self._log = None


# --- API helpers -----------------------------------------------------------------------------


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _check(resp, expect: int, what: str) -> dict:
    if resp.status_code != expect:
        raise BenchError(f"{what} -> {resp.status_code}: {resp.text[:500]}")
    return resp.json()


def wait_task(client, task_id: int, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = _check(client.get(f"/api/tasks/{task_id}/"), 200, f"GET task {task_id}")
        if task["state"] in ("succeeded", "failed"):
            return task
        if time.monotonic() > deadline:
            raise BenchError(
                f"task {task_id} ({task['kind']}) did not finish within {timeout:.0f} s: "
                f"still {task['state']}, log {[e['message'] for e in task['log']]}"
            )
        time.sleep(0.1)


def one_result(client, path: str, what: str) -> dict:
    page = _check(client.get(path), 200, f"GET {path}")
    if page["count"] != 1:
        raise BenchError(f"{what}: {page['count']} results for {path}")
    return page["results"][0]


def create_body(name: str, ctx: dict, tenant: int) -> dict:
    return {
        "name": name,
        "tenant": tenant,
        "host": ctx["host"],
        "vcpus": VCPUS,
        "memory_mib": MEMORY_MIB,
        "disks": [{"size_gib": DISK_GIB, "pool": ctx["pool"], "format": "qcow2"}],
        "nics": [{"network": ctx["network"]}],
        "boot": ["disk"],
        "start": True,
    }


class Create:
    """One create: client-side times, then the task as the API shows it at the end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.t0 = 0.0  # perf_counter just before the POST
        self.wall0 = 0.0  # time.time() at the same moment
        self.posted = 0.0  # perf_counter when the POST answered
        self.done: float | None = None  # perf_counter when the API showed it running
        self.vm_id: int | None = None
        self.task_id: int | None = None
        self.error = ""
        self.task: dict | None = None
        # (wall time, "state/lifecycle") the API showed after the task had succeeded
        self.lagging: list[tuple[float, str]] = []

    @property
    def seconds(self) -> float:
        return (self.done or 0.0) - self.t0

    def post(self, client, body: dict) -> None:
        self.wall0 = time.time()
        self.t0 = time.perf_counter()
        try:
            resp = client.post("/api/vms/", json=body)
        except Exception as exc:
            self.posted = time.perf_counter()
            self.error = f"POST failed: {exc.__class__.__name__}: {exc}"
            return
        self.posted = time.perf_counter()
        if resp.status_code != 202:
            self.error = f"POST -> {resp.status_code}: {resp.text[:300]}"
            return
        data = resp.json()
        self.vm_id = data["vm"]["id"]
        self.task_id = data["task"]["id"]

    def phases(self, started_event: float | None) -> dict[str, float] | None:
        """Seconds per phase, or None when the task did not log every step."""
        task = self.task
        if not task or task["state"] != "succeeded" or self.done is None:
            return None
        logs = task["log"]

        def log_at(prefix: str) -> float | None:
            for entry in logs:
                if entry["message"].startswith(prefix):
                    return _ts(entry["ts"])
            return None

        created, started, finished = (_ts(task[k]) for k in ("created", "started", "finished"))
        volume, define, start = log_at("Creating"), log_at("Defining"), log_at("Starting")
        marks = [self.wall0, created, started, volume, define, start, started_event, finished]
        if any(m is None for m in marks):
            return None
        marks.append(self.wall0 + self.seconds)
        return {name: marks[i + 1] - marks[i] for i, (name, _) in enumerate(PHASES)}


# --- setup -----------------------------------------------------------------------------------


def create_admin() -> None:
    from django.contrib.auth import get_user_model
    from django.db import connections

    get_user_model().objects.create_user(
        "bench-admin", password=PASSWORD, is_superuser=True, is_staff=True
    )
    connections.close_all()


def wait_for_worker(timeout: float = 90.0) -> float:
    """Wait until a Celery worker answers a broadcast ping; returns the seconds waited.

    The panel's web server answers before its worker listens to broadcasts, and a host added
    in between never reaches the worker (see the findings in docs/benchmarks.md): its first
    sync would stay queued.
    """
    from paddock.celery import app

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if app.control.ping(timeout=0.5):
            return time.perf_counter() - start
    raise BenchError(f"no Celery worker answered a ping within {timeout:.0f} s")


def setup_inventory(client, lab: Lab) -> dict:
    """Add the host, wait for its sync, find the pool and network, make two tenants."""
    start = time.perf_counter()
    host = _check(
        client.post("/api/hosts/", json={"name": f"bench-{lab.tag}", "uri": URI}),
        201,
        "POST /api/hosts/",
    )
    task = wait_task(client, host["task"]["id"], timeout=60.0)
    if task["state"] != "succeeded":
        raise BenchError(f"host sync failed: {task['error']}")
    host = _check(client.get(f"/api/hosts/{host['id']}/"), 200, "GET host")
    if host["status"] != "online":
        raise BenchError(f"host is {host['status']}: {host.get('last_error', '')}")
    figure("add host and first sync", time.perf_counter() - start, "s")
    pool = one_result(
        client, f"/api/storage-pools/?host={host['id']}&name={lab.pool_name}", "private pool"
    )
    net = one_result(client, f"/api/networks/?host={host['id']}&name={lab.net_name}", "network")
    if pool["state"] != "active":
        raise BenchError(f"pool {lab.pool_name} is {pool['state']} in the inventory")
    tenants = {}
    for phase in ("sequential", "concurrent"):
        tenant = _check(
            client.post("/api/tenants/", json={"name": f"bench-{lab.tag}-{phase}"}),
            201,
            "POST /api/tenants/",
        )
        tenants[phase] = tenant["id"]
    note(f"virt types offered by the host: {', '.join(host.get('virt_types') or []) or '?'}")
    return {"host": host["id"], "pool": pool["id"], "network": net["id"], "tenants": tenants}


# --- measuring -------------------------------------------------------------------------------


def run_sequential(client, ctx: dict, lab: Lab) -> list[Create]:
    """One create at a time; a failed one is recorded and the next one goes on."""
    creates = []
    for n in range(SEQUENTIAL):
        c = Create(f"{lab.vm_prefix}s{n:02d}")
        creates.append(c)
        c.post(client, create_body(c.name, ctx, ctx["tenants"]["sequential"]))
        if c.error:
            continue
        deadline = c.t0 + CREATE_TIMEOUT_S
        while time.perf_counter() < deadline:
            task = _check(client.get(f"/api/tasks/{c.task_id}/"), 200, "GET task")
            if task["state"] == "failed":
                c.error = "task failed"
                break
            if task["state"] == "succeeded":
                resp = client.get(f"/api/vms/{c.vm_id}/")
                vm = resp.json() if resp.status_code == 200 else None
                if vm and vm["state"] == "running" and vm["lifecycle"] == "ready":
                    c.done = time.perf_counter()
                    lab.pause(c.name)
                    break
                seen = f"{vm['state']}/{vm['lifecycle']}" if vm else f"GET {resp.status_code}"
                if not c.lagging or c.lagging[-1][1] != seen:
                    c.lagging.append((time.time(), seen))
            time.sleep(POLL_S)
        else:
            c.error = f"not running within {CREATE_TIMEOUT_S:.0f} s"
    return creates


def explain_failures(client, creates: list[Create], lab: Lab) -> None:
    """Add to each failed create the task's error and what the API and libvirt show now."""
    import libvirt

    for c in creates:
        if not c.error or c.task_id is None:
            continue
        if c.task is None or c.task["state"] not in ("succeeded", "failed"):
            c.task = _check(client.get(f"/api/tasks/{c.task_id}/"), 200, "GET task")
        resp = client.get(f"/api/vms/{c.vm_id}/")
        if resp.status_code == 200:
            vm = resp.json()
            inventory = f"VM row: lifecycle {vm['lifecycle']}, state {vm['state']}"
        else:
            inventory = f"VM row: GET -> {resp.status_code}"
        try:
            dom = lab.conn.lookupByName(c.name)
            domain = "domain " + ("active" if dom.isActive() else "defined, not active")
            if dom.isActive() and dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING:
                dom.suspend()  # keep the machine as quiet as for the others
        except libvirt.libvirtError:
            domain = "no domain"
        c.error = (
            f"{c.error}; task {c.task['state']}: {c.task['error'] or '-'}; {inventory}; {domain}"
        )


def run_burst(
    base_url: str,
    token: str,
    bodies: list[dict],
    names: list[str],
    db: BenchDatabase,
    tenant: int,
    pause=None,
) -> dict:
    """POST every body at the same moment, then poll the tenant's tasks and VMs until all are done.

    Returns the creates, the burst's start and end (perf_counter) and the most PostgreSQL
    backends seen on the bench database while it ran.
    """
    import httpx

    creates = [Create(name) for name in names]
    barrier = threading.Barrier(len(creates))
    headers = {"Authorization": f"Token {token}"}

    def submit(c: Create, body: dict) -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=120.0) as client:
            client.get("/api/auth/whoami/")  # connection open before the barrier
            barrier.wait()
            c.post(client, body)

    threads = [
        threading.Thread(target=submit, args=(c, body), name=f"post-{c.name}")
        for c, body in zip(creates, bodies, strict=True)
    ]
    for t in threads:
        t.start()
    max_backends = 0
    with httpx.Client(base_url=base_url, headers=headers, timeout=60.0) as client:
        while any(t.is_alive() for t in threads):
            max_backends = max(max_backends, db.session_stats()[1])
            time.sleep(POLL_S)
        started = min(c.t0 for c in creates)
        by_task = {c.task_id: c for c in creates if c.task_id is not None}
        pending = set(by_task)
        task_state: dict[int, str] = {}
        deadline = started + CREATE_TIMEOUT_S
        while pending and time.perf_counter() < deadline:
            tasks = _check(
                client.get(f"/api/tasks/?tenant={tenant}&kind=vm.create&limit=100"),
                200,
                "GET tasks",
            )["results"]
            vms = _check(client.get(f"/api/vms/?tenant={tenant}&limit=100"), 200, "GET vms")[
                "results"
            ]
            now = time.perf_counter()
            max_backends = max(max_backends, db.session_stats()[1])
            for task in tasks:
                task_state[task["id"]] = task["state"]
            vm_rows = {v["id"]: v for v in vms}
            running = {
                v["id"] for v in vms if v["state"] == "running" and v["lifecycle"] == "ready"
            }
            for task_id in list(pending):
                c = by_task[task_id]
                state = task_state.get(task_id)
                if state == "failed":
                    c.error = "task failed"
                    pending.discard(task_id)
                elif state == "succeeded" and c.vm_id in running:
                    c.done = now
                    pending.discard(task_id)
                    if pause is not None:
                        pause(c.name)
                elif state == "succeeded":
                    vm = vm_rows.get(c.vm_id)
                    seen = f"{vm['state']}/{vm['lifecycle']}" if vm else "not listed"
                    if not c.lagging or c.lagging[-1][1] != seen:
                        c.lagging.append((time.time(), seen))
            time.sleep(POLL_S)
        for task_id in pending:
            by_task[task_id].error = f"not running within {CREATE_TIMEOUT_S:.0f} s"
        for c in creates:
            if c.task_id is not None:
                c.task = _check(client.get(f"/api/tasks/{c.task_id}/"), 200, "GET task")
                if c.task["state"] == "failed":
                    c.error = "task failed"
    ended = max((c.done for c in creates if c.done), default=time.perf_counter())
    return {"creates": creates, "started": started, "ended": ended, "max_backends": max_backends}


def fetch_tasks(client, creates: list[Create]) -> None:
    for c in creates:
        if c.task_id is not None and c.task is None:
            c.task = _check(client.get(f"/api/tasks/{c.task_id}/"), 200, "GET task")


def max_running_at_once(creates: list[Create]) -> int:
    """The most tasks whose started..finished intervals overlap."""
    edges = []
    for c in creates:
        if c.task and c.task["started"] and c.task["finished"]:
            edges.append((_ts(c.task["started"]), 1))
            edges.append((_ts(c.task["finished"]), -1))
    best = now = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        now += step
        best = max(best, now)
    return best


def print_phases(creates: list[Create], lab: Lab) -> None:
    split = [c.phases(lab.started_at.get(c.name)) for c in creates]
    split = [s for s in split if s is not None]
    if not split:
        note("no per-phase split: the tasks' log lines or libvirt's start events are missing")
        return
    note(f"where the time goes (n={len(split)}), ms: p50 / p95 / mean / share of the mean total")
    total = sum(sum(s.values()) for s in split) / len(split)
    for name, meaning in PHASES:
        values = [s[name] for s in split]
        stats = summary_ms(values)
        share = 100.0 * stats["mean"] / 1000.0 / total if total else 0.0
        print(
            f"phase {name}: {stats['p50']:.0f} / {stats['p95']:.0f} / {stats['mean']:.0f} ms"
            f" / {share:.0f}%  ({meaning})",
            flush=True,
        )


def print_lagging(creates: list[Create]) -> None:
    """The VMs the API did not show running right after their task had succeeded."""
    for c in creates:
        if c.lagging and c.task and c.task["finished"]:
            finished = _ts(c.task["finished"])
            shown = ", ".join(f"{seen} at +{t - finished:.1f} s" for t, seen in c.lagging)
            note(
                f"{c.name}: task succeeded, then the API showed {shown}; running/ready at "
                f"+{c.wall0 + c.seconds - finished:.1f} s"
            )


def print_summary(label: str, samples_s: list[float], extra: str = "") -> None:
    s = summary_ms(samples_s)
    print(
        f"{label}: p50 {s['p50']:.0f} ms, p95 {s['p95']:.0f} ms, mean {s['mean']:.0f} ms, "
        f"min {s['min']:.0f} ms, max {s['max']:.0f} ms{extra}",
        flush=True,
    )


def server_problems(panel: Panel) -> list[str]:
    lines = panel.log_text().splitlines()
    keys = ("Traceback", "ERROR", "CRITICAL", "Error:", "remaining connection slots")
    return [line for line in lines if any(k in line for k in keys)]


def measure(panel: Panel, lab: Lab, db: BenchDatabase) -> None:
    import httpx

    with httpx.Client(base_url=panel.base_url, timeout=120.0) as anon:
        token = _check(
            anon.post("/api/auth/token/", json={"username": "bench-admin", "password": PASSWORD}),
            201,
            "POST /api/auth/token/",
        )["token"]
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=panel.base_url, headers=headers, timeout=120.0) as client:
        header("Setup through the API")
        ctx = setup_inventory(client, lab)

        header(f"Warm-up: {WARMUP} creates at once (each worker process connects to libvirt)")
        names = [f"{lab.vm_prefix}w{n}" for n in range(WARMUP)]
        bodies = [create_body(n, ctx, ctx["tenants"]["sequential"]) for n in names]
        warm = run_burst(panel.base_url, token, bodies, names, db, ctx["tenants"]["sequential"])
        for c in warm["creates"]:
            if c.error:
                raise BenchError(f"warm-up {c.name}: {c.error}")
            figure(f"warm-up {c.name.removeprefix(lab.vm_prefix)}", c.seconds * 1000, "ms", 0)
        for c in warm["creates"]:
            lab.pause(c.name)
        note("from here on, each guest is paused as soon as the API shows it running")

        header(f"Create to running, sequential (n={SEQUENTIAL})")
        note(
            f"each VM: {VCPUS} vCPU, {MEMORY_MIB} MiB, one new {DISK_GIB} GiB qcow2 disk, one NIC"
            " on a bridged network, start: true; polled every 50 ms"
        )
        seq = run_sequential(client, ctx, lab)
        fetch_tasks(client, seq)
        explain_failures(client, seq, lab)
        seq_ok = [c for c in seq if not c.error]
        seq_errors = [c for c in seq if c.error]
        if seq_ok:
            print_summary(
                "create to running",
                [c.seconds for c in seq_ok],
                f" (n={len(seq_ok)}, sequential)",
            )
        figure("errors", len(seq_errors))
        print_summary("POST /api/vms/ round trip", [c.posted - c.t0 for c in seq if c.posted])
        print_phases(seq_ok, lab)
        print_lagging(seq_ok)
        for c in seq_errors:
            note(f"error {c.name}: {c.error}")

        header(f"{CONCURRENT} concurrent creates (POSTed at once from {CONCURRENT} threads)")
        names = [f"{lab.vm_prefix}c{n:02d}" for n in range(CONCURRENT)]
        tenant = ctx["tenants"]["concurrent"]
        bodies = [create_body(n, ctx, tenant) for n in names]
        burst = run_burst(panel.base_url, token, bodies, names, db, tenant, pause=lab.pause)
        creates = burst["creates"]
        errors = [c for c in creates if c.error]
        ok = [c for c in creates if not c.error]
        total = burst["ended"] - burst["started"]
        per_vm = summary_ms([c.seconds for c in ok]) if ok else None
        line = f"{CONCURRENT} concurrent creates: total {total:.1f} s, errors {len(errors)}"
        if per_vm:
            line += f", per-VM p50 {per_vm['p50']:.0f} ms, p95 {per_vm['p95']:.0f} ms"
        print(line, flush=True)
        if ok:
            print_summary("per-VM create to running", [c.seconds for c in ok], f" (n={len(ok)})")
        posted = [c.posted - c.t0 for c in creates if c.posted]
        print_summary("POST /api/vms/ round trip under the burst", posted)
        figure("VM creates running at once in the workers (max)", max_running_at_once(creates))
        figure("PostgreSQL backends on the bench database (max seen)", burst["max_backends"])
        print_phases(ok, lab)
        print_lagging(ok)
        explain_failures(client, errors, lab)
        for c in errors:
            note(f"error {c.name}: {c.error}")

        domains = lab.domains()
        active = sum(1 for d in domains if d.isActive())
        figure("paddockbench domains on libvirt", len(domains))
        figure("of which active (running or paused)", active)
        if lab.stopped:
            note(f"domains that stopped during the run: {', '.join(sorted(set(lab.stopped)))}")
        problems = server_problems(panel)
        figure("error lines in the panel's log", len(problems))
        for line in problems[:15]:
            note("panel log: " + line[:240])
        if seq_errors or errors:
            raise BenchError(
                f"{len(seq_errors)} of {SEQUENTIAL} sequential and {len(errors)} of "
                f"{CONCURRENT} concurrent creates failed"
            )


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def main() -> None:
    import libvirt  # noqa: F401  (fail early when the bindings are missing)

    if os.geteuid() != 0:
        raise BenchError("Needs root: it creates a Linux bridge and a directory for libvirt.")
    with BenchDatabase() as db, bench_environment(db) as data_dir:
        os.environ["PADDOCK_DEMO"] = "1"
        redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/" + REDIS_DB
        os.environ["REDIS_URL"] = redis_url
        header("VM create benchmark (real libvirtd, production shape)")
        note(f"database {db.name} (created for this run, dropped at the end)")
        note(f"Redis database {REDIS_DB} (emptied at the start and at the end)")
        flush_redis(redis_url)
        setup_django_and_migrate()
        create_admin()
        lab = Lab()
        panel = Panel(data_dir / "panel.log")
        try:
            lab.create()
            note(f"libvirt: pool {lab.pool_name}, network {lab.net_name} on bridge {lab.bridge}")
            start = time.perf_counter()
            panel.start()
            figure("start the panel: web answers", time.perf_counter() - start, "s")
            wait_for_worker()
            figure("start the panel: worker answers a ping", time.perf_counter() - start, "s")
            measure(panel, lab, db)
        except BaseException:
            tail = panel.log_tail(40)
            if tail:
                print(f"--- the panel's log (last lines)\n{tail}\n---", file=sys.stderr, flush=True)
            raise
        finally:
            try:
                panel.stop()
            finally:
                try:
                    count = len(lab.domains()) if lab.conn is not None else 0
                except Exception:
                    count = 0
                problems = lab.cleanup()
                note(f"cleanup: removed {count} domains, the pool, the network and the bridge")
                for problem in problems:
                    print(f"cleanup problem: {problem}", file=sys.stderr, flush=True)
                flush_redis(redis_url)
                if problems:
                    raise BenchError("cleanup left something behind (see above)")


if __name__ == "__main__":
    run_main(main)
