#!/usr/bin/env python3
"""Faults injected into the production shape, and libvirt's and the database's truth after each.

The script starts its own PostgreSQL cluster (initdb into a temporary folder, run as the
``postgres`` user on a free port) and its own redis-server (a free port, no persistence), then
the four processes of the production shape against them and the real libvirtd
(``qemu:///system``): web (uvicorn), worker (celery, prefork), beat and watcher
(``manage.py watch_hosts``). It drives work through the REST API (create, start, snapshot,
clone, delete of diskful VMs on a private dir pool) and, in each trial, injects one fault while
that work is in flight:

- ``web``, ``worker``, ``beat``, ``watcher``: ``kill -9`` of the process (its whole process
  group, as a container or a systemd unit dies), then started again;
- ``redis``: redis-server killed and started empty (the queued messages are gone);
- ``postgres``: the cluster stopped ``immediate`` (a crash: no clean shutdown) and started.

After each trial it waits until every task of the trial is final and compares the truth:
tasks lost (still queued or running at the deadline), duplicated side effects (two VM rows or
snapshots for one request), orphans (domains or volumes in libvirt without a row, rows without a
domain), stuck locks (held by a finished or missing task, or a follow-up action refused) and the
seconds from the end of the fault until every task was final (goal: under 60). It prints one row
per fault and exits non-zero on any bad count.

    make chaos                                # 10 trials of each fault
    CHAOS_TRIALS=1 CHAOS_FAULTS=worker,redis .venv/bin/python scripts/chaos.py

Everything it makes (libvirt names start with ``paddockchaos-``) is removed at the end, on
Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import libvirt
import psycopg
import redis
from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PREFIX = "paddockchaos-"
URI = "qemu:///system"
FAULTS = ("web", "worker", "beat", "watcher", "redis", "postgres")
FINAL = ("succeeded", "failed", "cancelled")
KILL_MID = ("vm.create", "vm.delete", "vm.snapshot_create", "vm.clone")
GOAL_SECONDS = 60.0
#: how long a trial waits for its tasks to end before it counts the rest as lost
LOST_AFTER_SECONDS = 150.0


def say(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the service is still coming up
            last = exc
        time.sleep(interval)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s ({last})")


# --- private services -------------------------------------------------------------------------


class Postgres:
    """A PostgreSQL cluster of its own, owned by the ``postgres`` OS user, on a free port."""

    def __init__(self, root: Path):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("initdb not found under /usr/lib/postgresql/*/bin")
        self.bin = Path(bins[-1]).parent
        self.base = root / "pg"
        self.data = self.base / "data"
        self.port = free_port()
        self.base.mkdir(mode=0o700)
        shutil.chown(self.base, "postgres", "postgres")
        self._as_postgres(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        self.start()
        with psycopg.connect(self.url("postgres", "postgres"), autocommit=True) as conn:
            conn.execute("CREATE ROLE paddock LOGIN SUPERUSER PASSWORD 'paddock'")
            conn.execute("CREATE DATABASE paddock OWNER paddock")

    def _as_postgres(self, program: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / program), *args],
            check=True, cwd=self.base, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def url(self, user: str = "paddock", db: str = "paddock") -> str:
        password = ":paddock" if user == "paddock" else ""
        return f"postgres://{user}{password}@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


class Redis:
    """A redis-server of its own that keeps nothing on disk: a restart starts it empty."""

    def __init__(self, root: Path):
        self.dir = root / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=(self.dir / "server.log").open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        _wait(lambda: redis.Redis.from_url(self.url).ping(), 30, "redis")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


# --- the production shape ---------------------------------------------------------------------


class Shape:
    """web, worker, beat and watcher as separate processes (the commands ``make demo`` runs)."""

    def __init__(self, root: Path, pg: Postgres, rd: Redis):
        self.data = root / "data"
        self.logs = root / "logs"
        self.logs.mkdir()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env.update(
            SECRET_KEY=secrets.token_urlsafe(40),
            DATABASE_URL=pg.url(),
            REDIS_URL=rd.url,
            PADDOCK_DATA_DIR=str(self.data),
            PADDOCK_RECONCILE_SECONDS="15",
            PADDOCK_METRICS_INTERVAL="30",
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        # Processes that exited on their own and were started again, as a supervisor would
        # (compose's "restart: unless-stopped", make demo's loop): (name, its last log line).
        self.exits: list[tuple[str, str]] = []

    def commands(self) -> dict[str, list[str]]:
        bindir = os.path.dirname(PY)
        return {
            "web": [os.path.join(bindir, "uvicorn"), "paddock.asgi:application",
                    "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            "worker": [PY, "manage.py", "run_worker", "--", "--loglevel", "WARNING",
                       "--concurrency", "2"],
            "beat": [PY, "-m", "celery", "-A", "paddock", "beat", "--loglevel", "WARNING",
                     "--schedule", str(self.data / "celerybeat-schedule")],
            "watcher": [PY, "manage.py", "watch_hosts"],
        }  # fmt: skip

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [PY, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if result.returncode:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def start(self, name: str, **extra_env: str) -> None:
        self.procs[name] = subprocess.Popen(
            self.commands()[name], cwd=ROOT, env={**self.env, **extra_env},
            stdout=(self.logs / f"{name}.log").open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        if name == "web":
            self.wait_web()

    def wait_web(self) -> None:
        def healthy() -> bool:
            proc = self.procs["web"]
            if proc.poll() is not None:
                raise SystemExit(f"web exited:\n{self.tail('web')}")
            return httpx.get(f"{self.base}/api/health/", timeout=2).status_code == 200

        _wait(healthy, 60, "web")

    def kill(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def check_alive(self) -> None:
        """Start again what exited on its own (the chaos run never stops a process without
        starting it again), and note it: the tasks must come out right all the same."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                lines = [line for line in self.tail(name).splitlines() if line.strip()]
                self.exits.append((name, lines[-1][:200] if lines else f"exit {proc.returncode}"))
                say(f"chaos: {name} exited on its own ({self.exits[-1][1]}); starting it again")
                self.start(name)


# --- the panel's API --------------------------------------------------------------------------


class Api:
    def __init__(self, base: str):
        self.base = base
        self.headers: dict[str, str] = {}

    def login(self, username: str, password: str) -> None:
        r = httpx.post(
            f"{self.base}/api/auth/token/", json={"username": username, "password": password}
        )
        r.raise_for_status()
        self.headers = {"Authorization": f"Token {r.json()['token']}"}

    def call(self, method: str, path: str, body=None, *, tries: int = 5) -> httpx.Response:
        """A request; retried on a dropped connection or a 5xx (a backend restarting)."""
        for attempt in range(tries):
            try:
                r = httpx.request(
                    method, f"{self.base}{path}", json=body, headers=self.headers, timeout=30
                )
                if r.status_code < 500:
                    return r
            except httpx.HTTPError:
                if attempt == tries - 1:
                    raise
            time.sleep(1)
        return r

    def accepted(self, method: str, path: str, body=None) -> dict:
        r = self.call(method, path, body)
        if r.status_code not in (201, 202):
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json()


# --- libvirt ----------------------------------------------------------------------------------


def _pool_xml(name: str, path: str) -> str:
    pool = etree.Element("pool", type="dir")
    etree.SubElement(pool, "name").text = name
    target = etree.SubElement(pool, "target")
    etree.SubElement(target, "path").text = path
    return etree.tostring(pool).decode()


class Libvirt:
    """libvirt's truth about what this run made: domains and volumes named ``prefix``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.conn = libvirt.open(URI)
        self.pool_name = f"{prefix}pool"
        self.pool_path = f"/var/lib/libvirt/images/{prefix}pool"
        os.makedirs(self.pool_path, mode=0o755)
        self.pool = self.conn.storagePoolDefineXML(_pool_xml(self.pool_name, self.pool_path), 0)
        self.pool.create(0)

    def domains(self) -> dict[str, str]:
        """uuid -> name of this run's domains."""
        return {
            d.UUIDString(): d.name()
            for d in self.conn.listAllDomains(0)
            if d.name().startswith(self.prefix)
        }

    def volumes(self) -> list[str]:
        self.pool.refresh(0)
        return sorted(v.path() for v in self.pool.listAllVolumes(0))

    def cleanup(self) -> None:
        for dom in self.conn.listAllDomains(0):
            if not dom.name().startswith(self.prefix):
                continue
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                    | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                )
        with contextlib.suppress(libvirt.libvirtError):
            self.pool.refresh(0)
            for vol in self.pool.listAllVolumes(0):
                vol.delete(0)
        with contextlib.suppress(libvirt.libvirtError):
            self.pool.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            self.pool.undefine()
        shutil.rmtree(self.pool_path, ignore_errors=True)
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.close()


# --- truth ------------------------------------------------------------------------------------


class Db:
    """Plain SQL on the private database, one short connection per question (it restarts)."""

    def __init__(self, url: str):
        self.url = url

    def rows(self, sql: str, *args) -> list[tuple]:
        def ask():
            with psycopg.connect(self.url, connect_timeout=3) as conn:
                return (conn.execute(sql, args).fetchall(),)

        return _wait(ask, 60, "the database", interval=0.5)[0]

    def lock_tables(self) -> list[str]:
        return [
            r[0]
            for r in self.rows(
                "SELECT table_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND column_name = 'lock_id'"
            )
        ]


@dataclass
class Verdict:
    lost: int = 0
    duplicated: int = 0
    orphans: int = 0
    stuck_locks: int = 0
    recovery: float = 0.0
    tasks: str = ""
    struck: str = ""
    self_exits: int = 0  # processes that exited on their own during the trial (started again)
    notes: list[str] = field(default_factory=list)

    def bad(self) -> bool:
        return (
            bool(self.lost or self.duplicated or self.orphans or self.stuck_locks)
            or self.recovery >= GOAL_SECONDS
        )


def wait_final(db: Db, after_id: int, timeout: float, tick=None) -> tuple[float, list[tuple]]:
    """Seconds until every task newer than ``after_id`` is final; the ones that never were.
    ``tick`` runs on every look (the shape's supervisor: what exited is started again)."""
    start = time.monotonic()
    while True:
        if tick is not None:
            tick()
        open_tasks = db.rows(
            "SELECT id, kind, state FROM panel_task WHERE id > %s AND state <> ALL(%s)",
            after_id,
            list(FINAL),
        )
        elapsed = time.monotonic() - start
        if not open_tasks or elapsed > timeout:
            return elapsed, open_tasks
        time.sleep(0.25)


def truth(db: Db, lv: Libvirt, verdict: Verdict, seen: set[str]) -> None:
    """Compare libvirt with the inventory; count what differs into ``verdict`` (what an
    earlier trial counted already, ``seen``, is noted but not counted again)."""
    before = len(verdict.notes)
    like = lv.prefix + "%"
    rows = db.rows(
        "SELECT id, name, uuid::text, lifecycle FROM vms_virtualmachine "
        "WHERE name LIKE %s AND NOT gone",
        like,
    )
    domains = lv.domains()
    row_uuids = {r[2] for r in rows}
    for uid, name in domains.items():
        if uid not in row_uuids:
            verdict.orphans += 1
            verdict.notes.append(f"domain {name} has no VM row")
    for _pk, name, uid, _lifecycle in rows:
        if uid not in domains:
            verdict.orphans += 1
            verdict.notes.append(f"VM row {name} has no domain")
    disks = {
        r[0]
        for r in db.rows(
            "SELECT d.source FROM vms_disk d JOIN vms_virtualmachine v ON v.id = d.vm_id "
            "WHERE v.name LIKE %s AND NOT v.gone",
            like,
        )
    }
    for path in lv.volumes():
        if path not in disks:
            verdict.orphans += 1
            verdict.notes.append(f"volume {path} belongs to no VM")
    for name, count in db.rows(
        "SELECT name, count(*) FROM vms_virtualmachine WHERE name LIKE %s AND NOT gone "
        "GROUP BY host_id, name HAVING count(*) > 1",
        like,
    ):
        verdict.duplicated += count - 1
        verdict.notes.append(f"{count} VM rows named {name}")
    for vm, name, count in db.rows(
        "SELECT vm_id, name, count(*) FROM vms_snapshot GROUP BY vm_id, name HAVING count(*) > 1"
    ):
        verdict.duplicated += count - 1
        verdict.notes.append(f"{count} snapshot rows {name} of VM {vm}")
    for table in db.lock_tables():
        for pk, lock_id, state in db.rows(
            f'SELECT o.id, o.lock_id, t.state FROM "{table}" o '
            "LEFT JOIN panel_task t ON t.id = o.lock_id "
            "WHERE o.lock_id IS NOT NULL AND (t.id IS NULL OR t.state = ANY(%s))",
            list(FINAL),
        ):
            verdict.stuck_locks += 1
            verdict.notes.append(f"{table} {pk} still locked by task {lock_id} ({state})")
    for i, note in enumerate(verdict.notes[before:], start=before):
        if note in seen:
            verdict.notes[i] = f"{note} (counted before)"
            if "locked" in note:
                verdict.stuck_locks -= 1
            elif "VM rows named" in note or "snapshot rows" in note:
                verdict.duplicated -= 1
            else:
                verdict.orphans -= 1
        seen.add(note)


# --- the run ----------------------------------------------------------------------------------


class Chaos:
    def __init__(self):
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"{PREFIX}{self.tag}-"
        self.root = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.root.chmod(0o711)  # the postgres user enters it to reach its own folder
        self.pg: Postgres | None = None
        self.rd: Redis | None = None
        self.shape: Shape | None = None
        self.lv: Libvirt | None = None
        self.seen: set[str] = set()

    # setting up

    def up(self) -> None:
        say(f"chaos: private services under {self.root}")
        self.pg = Postgres(self.root)
        self.rd = Redis(self.root)
        self.db = Db(self.pg.url())
        self.shape = shape = Shape(self.root, self.pg, self.rd)
        shape.manage("migrate", "--no-input", "-v", "0")
        password = secrets.token_urlsafe(12)
        out = shape.manage(
            "shell",
            "-c",
            "import json\n"
            "from django.contrib.auth import get_user_model\n"
            "from panel.models import Tenant\n"
            f"get_user_model().objects.create_superuser('chaos', password={password!r})\n"
            "print(json.dumps({'tenant': Tenant.objects.create(name='chaos').pk}))",
        )
        self.tenant = json.loads(out.strip().splitlines()[-1])["tenant"]
        self.lv = Libvirt(self.prefix)
        for name in ("web", "worker", "beat", "watcher"):
            shape.start(name)
        self.api = Api(shape.base)
        self.api.login("chaos", password)
        host = self.api.accepted("POST", "/api/hosts/", {"name": "local", "uri": URI})
        self.host = host["id"]
        self.wait_tasks([host["task"]["id"]], "adding the host")
        pools = self.api.call("GET", f"/api/storage-pools/?host={self.host}&limit=1000").json()
        self.pool = next(p["id"] for p in pools["results"] if p["name"] == self.lv.pool_name)
        self.template = self.create(f"{self.prefix}tmpl")

    def create(self, name: str, *, start: bool = False) -> int:
        body = self.api.accepted("POST", "/api/vms/", self.create_body(name, start))
        self.wait_tasks([body["task"]["id"]], f"creating {name}")
        return body["vm"]["id"]

    def create_body(self, name: str, start: bool = False) -> dict:
        return {
            "name": name,
            "tenant": self.tenant,
            "host": self.host,
            "vcpus": 1,
            "memory_mib": 64,
            "virt_type": "qemu",
            "disks": [{"size_gib": 1, "pool": self.pool}],
            "start": start,
        }

    def wait_tasks(self, ids: list[int], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.db.rows(
                "SELECT id, state, error FROM panel_task WHERE id = ANY(%s)", list(ids)
            )
            if rows and all(r[1] in FINAL for r in rows):
                bad = [r for r in rows if r[1] != "succeeded"]
                if bad:
                    raise RuntimeError(f"{what}: task {bad[0][0]} {bad[0][1]}: {bad[0][2]}")
                return
            self.shape.check_alive()
            time.sleep(0.3)
        raise RuntimeError(f"{what}: tasks {ids} not final after {timeout:.0f} s")

    def last_task(self) -> int:
        rows = self.db.rows("SELECT coalesce(max(id), 0) FROM panel_task")
        return rows[0][0]

    # one trial

    def burst(self, names: dict[str, str], a: int, d: int, *, extra_creates: int = 0) -> None:
        """The work in flight when the fault strikes; each request may fail with the fault."""
        requests = [
            ("POST", "/api/vms/", self.create_body(names["b"])),
            ("POST", f"/api/vms/{a}/snapshots/", {"name": "s1"}),
            ("POST", f"/api/vms/{self.template}/clone/", {"name": names["c"]}),
            ("DELETE", f"/api/vms/{d}/?delete_volumes=true", None),
        ]
        for i in range(extra_creates):
            requests.append(("POST", "/api/vms/", self.create_body(f"{names['b']}x{i}")))

        self._answers: list[str] = []

        def send(method, path, body):
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.request(
                    method, f"{self.api.base}{path}", json=body, headers=self.api.headers,
                    timeout=30,
                )  # fmt: skip
                self._answers.append(f"{method} {path}: {r.status_code} {r.text[:200]}")

        threads = [threading.Thread(target=send, args=r, daemon=True) for r in requests]
        for t in threads:
            t.start()
        self._burst_threads = threads

    def wait_running(self, after_id: int, kind: str = "", timeout: float = 15) -> str:
        """Wait until a task of the trial (of ``kind``, when given) runs; the kinds running."""
        deadline = time.monotonic() + timeout
        # One connection for the whole wait: a short task is over before a new one is open.
        with psycopg.connect(self.db.url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                running = [
                    r[0]
                    for r in conn.execute(
                        "SELECT kind FROM panel_task WHERE id > %s AND state = 'running'",
                        (after_id,),
                    )
                ]
                if running and (not kind or kind in running):
                    return ", ".join(running)
                time.sleep(0.01)
        return "nothing"

    def inject(self, fault: str, n: int, mark: int, names: dict, a: int, d: int) -> float:
        """Strike ``fault`` in the middle of the burst; the monotonic time it ended."""
        shape = self.shape
        self.struck = "the requests"
        if fault == "web" and n % 2 == 0:
            # The dual write, for certain: the web process stops right after a task's row is
            # committed and before its message is sent (a failpoint), and is killed there.
            marker = self.root / "web.marker"
            marker.unlink(missing_ok=True)
            shape.kill("web")
            shape.start("web", PADDOCK_FAILPOINTS="task.dispatch",
                        PADDOCK_FAILPOINT_MARKER=str(marker))  # fmt: skip
            self.burst(names, a, d, extra_creates=3)
            try:
                _wait(marker.exists, 30, "the web failpoint")
                self.struck = "a request between its commit and its send"
            except RuntimeError as exc:  # killed all the same; the trial says so
                self.struck = f"the requests ({exc}; answers: {self._answers})"
            time.sleep(0.3)  # the other requests queue behind it
            shape.kill("web")
            for t in self._burst_threads:
                t.join(35)
            shape.start("web")
            return time.monotonic()
        if fault == "web":
            self.burst(names, a, d, extra_creates=3)
            time.sleep(random.uniform(0.05, 0.4))  # while the POSTs are being served
            shape.kill("web")
            for t in self._burst_threads:
                t.join(35)
            shape.start("web")
            return time.monotonic()
        self.burst(names, a, d)
        # A killed worker strikes each kind in turn: mid create, delete, snapshot and clone.
        kind = KILL_MID[n % len(KILL_MID)] if fault == "worker" else ""
        self.struck = self.wait_running(mark, kind)
        if fault in ("worker", "beat", "watcher"):
            shape.kill(fault)
            shape.start(fault)
        elif fault == "redis":
            self.rd.stop()
            time.sleep(1)
            self.rd.start()
        elif fault == "postgres":
            self.pg.stop("immediate")
            time.sleep(1)
            self.pg.start()
        ended = time.monotonic()
        for t in self._burst_threads:  # requests answered (or refused) during the fault
            t.join(35)
        return ended

    def trial(self, fault: str, n: int) -> Verdict:
        verdict = Verdict()
        exits_before = len(self.shape.exits)
        base = f"{self.prefix}{fault[:3]}{n}"
        names = {k: f"{base}{k}" for k in "abcd"}
        a = self.create(names["a"])
        d = self.create(names["d"], start=True)
        mark = self.last_task()
        ended = self.inject(fault, n, mark, names, a, d)
        _elapsed, open_tasks = wait_final(
            self.db, mark, LOST_AFTER_SECONDS, tick=self.shape.check_alive
        )
        verdict.recovery = round(time.monotonic() - ended, 1)
        verdict.struck = self.struck
        verdict.tasks = ", ".join(
            f"{kind} {state}"
            + (" by recovery" if state == "succeeded" and "stopped before" in (last or "") else "")
            + (f" [{error[:160]}]" if error else "")
            for kind, state, error, last in self.db.rows(
                "SELECT t.kind, t.state, t.error, (SELECT l.message FROM panel_tasklogentry l "
                "WHERE l.task_id = t.id ORDER BY l.id DESC LIMIT 1) "
                "FROM panel_task t WHERE t.id > %s ORDER BY t.id",
                mark,
            )
        )
        for task_id, kind, state in open_tasks:
            verdict.lost += 1
            verdict.notes.append(f"task {task_id} ({kind}) still {state}")
        self.shape.check_alive()
        truth(self.db, self.lv, verdict, self.seen)
        self.tidy(base, verdict)
        for name, why in self.shape.exits[exits_before:]:
            verdict.self_exits += 1
            verdict.notes.append(f"{name} exited on its own and was started again: {why}")
        return verdict

    def tidy(self, base: str, verdict: Verdict) -> None:
        """Delete the trial's VMs; a refused delete (409) is a lock left behind."""
        mark = self.last_task()
        vms = self.db.rows(
            "SELECT id, name FROM vms_virtualmachine WHERE name LIKE %s AND NOT gone", base + "%"
        )
        for pk, name in vms:
            r = self.api.call("DELETE", f"/api/vms/{pk}/?delete_volumes=true")
            if r.status_code != 202:
                verdict.stuck_locks += 1
                verdict.notes.append(f"delete of {name} refused: {r.status_code} {r.text[:200]}")
        _elapsed, open_tasks = wait_final(self.db, mark, 120, tick=self.shape.check_alive)
        if open_tasks:
            verdict.lost += len(open_tasks)
            verdict.notes.append(f"tidying left {open_tasks}")
        for (error,) in self.db.rows(
            "SELECT error FROM panel_task WHERE id > %s AND state <> 'succeeded'", mark
        ):
            verdict.notes.append(f"tidying: {error}")
            verdict.stuck_locks += 1

    # tearing down

    def down(self) -> None:
        if self.shape is not None:
            self.shape.stop_all()
        if self.lv is not None:
            self.lv.cleanup()
        if self.rd is not None:
            self.rd.stop()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.stop("immediate")
        if os.environ.get("CHAOS_KEEP"):
            say(f"chaos: kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def table(results: dict[str, list[Verdict]]) -> str:
    head = (
        "fault", "trials", "lost", "duplicated", "orphans", "stuck locks", "max recovery s",
        "exited on their own",
    )  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for fault, verdicts in results.items():
        cells = (
            f"kill -9 {fault}" if fault in ("web", "worker", "beat", "watcher") else
            "redis restarted empty" if fault == "redis" else "postgres restarted",
            len(verdicts),
            sum(v.lost for v in verdicts),
            sum(v.duplicated for v in verdicts),
            sum(v.orphans for v in verdicts),
            sum(v.stuck_locks for v in verdicts),
            f"{max((v.recovery for v in verdicts), default=0):.1f}",
            sum(v.self_exits for v in verdicts),
        )  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def run(trials: int, faults: list[str]) -> int:
    """Run ``trials`` of each fault; print the table; 0 when nothing was bad."""
    chaos = Chaos()
    results: dict[str, list[Verdict]] = {f: [] for f in faults}

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        chaos.up()
        for fault in faults:
            for n in range(trials):
                verdict = chaos.trial(fault, n)
                results[fault].append(verdict)
                status = "BAD" if verdict.bad() else "ok"
                say(
                    f"chaos: {fault} trial {n + 1}/{trials}: {status}, final "
                    f"{verdict.recovery:.1f} s after the fault; struck mid {verdict.struck} "
                    f"({verdict.tasks})" + "".join(f"\n    {note}" for note in verdict.notes)
                )
    finally:
        signal.signal(signal.SIGTERM, previous)
        chaos.down()
    say(table(results))
    bad = any(v.bad() for vs in results.values() for v in vs)
    say(
        f"chaos: every task final within {GOAL_SECONDS:.0f} s, nothing lost: {'FAIL' if bad else 'PASS'}"
    )
    return 1 if bad else 0


def main() -> int:
    trials = int(os.environ.get("CHAOS_TRIALS", "10"))
    faults = [f for f in os.environ.get("CHAOS_FAULTS", ",".join(FAULTS)).split(",") if f]
    unknown = set(faults) - set(FAULTS)
    if unknown or trials < 1:
        say(f"chaos: CHAOS_FAULTS takes {', '.join(FAULTS)}; CHAOS_TRIALS at least 1")
        return 2
    if os.geteuid() != 0:
        say(
            "chaos: run as root (it starts PostgreSQL as the postgres user and uses qemu:///system)"
        )
        return 2
    os.chdir(ROOT)
    return run(trials, faults)


if __name__ == "__main__":
    sys.exit(main())
