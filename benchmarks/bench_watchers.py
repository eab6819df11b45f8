"""Host watchers at 2,000 hosts: threads per process, database connections, and how soon every
unreachable host is offline, with one watcher process and with two shards.

Production shape against a throwaway database: ``manage.py watch_hosts --shard i/n`` as child
processes (PostgreSQL, the Redis channel layer). The hosts, inserted as rows:

* 1,800 ``qemu+ssh://root@127.x.y.z:<port>/system`` on loopback addresses and a port nothing
  listens on (refused at once);
* 100 on a port whose listener (this script's) has a full accept queue, so SYNs are dropped
  and every connect times out, as with a host that drops packets;
* 100 healthy test-driver hosts (``test:///<tmp>/node-N.xml``, ``hosts.testnode``, 5 domains
  each), which must come online.

Runs: 20 hosts of the same mix with ``--shard 0/1`` (the baseline for the thread count), then
all 2,000 with ``--shard 0/1``, then with two processes ``--shard 0/2`` and ``--shard 1/2``.
Before each run every host is reset to ``new``. Sampled every 0.5 s until all is settled:
threads of each process (``/proc/<pid>/status``), connections to the bench database
(``pg_stat_activity``, the sampler's own left out), hosts offline, hosts online.

Goals: every unreachable host offline within one reconcile interval (``RECONCILE_SECONDS``,
30 s) of the processes starting, none of them ever online; threads per process at 2,000 hosts
no more than at 20 plus the openers' call threads (``WATCHER_OPENERS`` + the 8 idle call
threads kept); database connections within the documented bound (the pool's size,
``PADDOCK_DB_POOL_MAX``, per process; in use at once ``WATCHER_APPLIERS`` + 3). The seconds count
from each run's processes saying they are watching (Django set up, the pool started); the
start-up before that is printed apart. At the end, also on failure, Ctrl-C or SIGTERM, the processes are stopped by their
PIDs, the listener closed and the database dropped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO_ROOT,
    BenchDatabase,
    BenchError,
    _psycopg_connect,
    bench_environment,
    figure,
    header,
    note,
    run_main,
    setup_django_and_migrate,
)

REFUSED = int(os.environ.get("BENCH_WATCHERS_REFUSED", "1800"))
SILENT = int(os.environ.get("BENCH_WATCHERS_SILENT", "100"))
HEALTHY = int(os.environ.get("BENCH_WATCHERS_HEALTHY", "100"))
BASELINE = 20
PINNED_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
SETTLE_TIMEOUT = 90.0
CALL_THREADS_IDLE = 8  # hosts.driver.deadline.MAX_IDLE_THREADS


def goal_line(name: str, value: float, unit: str, limit: float, passed: bool) -> bool:
    print(
        f"GOAL {name}: {value:g} {unit} (goal <= {limit:g} {unit}) {'PASS' if passed else 'FAIL'}",
        flush=True,
    )
    return passed


class SilentPort:
    """A port whose SYNs are dropped: a listener with backlog 0 that never accepts, filled."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(0)
        self.fill = [socket.socket() for _ in range(3)]
        for client in self.fill:
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", self.sock.getsockname()[1]))
        time.sleep(0.2)
        return self.sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        for client in self.fill:
            client.close()
        self.sock.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_hosts(data_dir: Path, silent_port: int) -> dict[str, list[int]]:
    """Insert the hosts; ``{"refused": [pk...], "silent": [...], "healthy": [...]}``, each list
    in insertion order (the baseline takes the first of each kind)."""
    from hosts.models import Host
    from hosts.testnode import write_node

    refused_port = closed_port()
    rows: list[tuple[str, Host]] = []
    for n in range(max(REFUSED, SILENT, HEALTHY)):
        if n < REFUSED:
            uri = f"qemu+ssh://root@127.10.{n // 250}.{n % 250 + 1}:{refused_port}/system"
            rows.append(("refused", Host(name=f"refused-{n}", uri=uri, ssh_host_key=PINNED_KEY)))
        if n < SILENT:
            uri = f"qemu+ssh://root@127.20.{n // 250}.{n % 250 + 1}:{silent_port}/system"
            rows.append(("silent", Host(name=f"silent-{n}", uri=uri, ssh_host_key=PINNED_KEY)))
        if n < HEALTHY:
            uri = write_node(data_dir / f"node-{n}.xml", domains=5, seed=1000 + n)
            rows.append(("healthy", Host(name=f"healthy-{n}", uri=uri)))
    created = Host.objects.bulk_create([host for _kind, host in rows], batch_size=500)
    kinds: dict[str, list[int]] = {"refused": [], "silent": [], "healthy": []}
    for (kind, _), host in zip(rows, created, strict=True):
        kinds[kind].append(host.pk)
    return kinds


def baseline_ids(kinds: dict[str, list[int]]) -> dict[str, list[int]]:
    """About BASELINE hosts of the same mix."""
    total = sum(len(v) for v in kinds.values())
    return {k: v[: max(1, round(BASELINE * len(v) / total))] for k, v in kinds.items()}


class Watchers:
    """``manage.py watch_hosts --shard i/n`` for i in 0..n-1, each stopped by its PID."""

    def __init__(self, shards: int, log_dir: Path) -> None:
        self.shards = shards
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []
        self._logs: list = []

    def start(self) -> None:
        for index in range(self.shards):
            log = open(self.log_dir / f"watch-{index}-of-{self.shards}.log", "wb")
            self._logs.append(log)
            argv = [sys.executable, "manage.py", "watch_hosts"]
            argv += ["--shard", f"{index}/{self.shards}", "--rescan", "5"]
            self.procs.append(
                subprocess.Popen(
                    argv, cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT
                )
            )

    def threads(self) -> list[int]:
        counts = []
        for proc in self.procs:
            if proc.poll() is not None:
                raise BenchError(f"watch_hosts exited with {proc.returncode}:\n{self.log_tail()}")
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("Threads:"):
                    counts.append(int(line.split()[1]))
        return counts

    def watching(self) -> bool:
        """Whether every process has said it is watching (Django is up, the pool started)."""
        for index in range(self.shards):
            path = self.log_dir / f"watch-{index}-of-{self.shards}.log"
            if b"Watching hosts of shard" not in path.read_bytes():
                return False
        return True

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for path in sorted(self.log_dir.glob(f"watch-*-of-{self.shards}.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        for log in self._logs:
            log.close()
        self._logs = []


def run(
    title: str, db: BenchDatabase, kinds: dict[str, list[int]], shards: int, data_dir: Path
) -> dict:
    """One run: reset the hosts, start the processes, sample until settled."""
    from django.db import connections

    from hosts.models import Host

    all_ids = [pk for ids in kinds.values() for pk in ids]
    unreachable = set(kinds["refused"]) | set(kinds["silent"])
    healthy = set(kinds["healthy"])
    Host.objects.update(status="new", last_error="")
    # This process keeps no connection of its own to the bench database during the run (its
    # pool closed), so pg_stat_activity shows the watchers' and the sampler's only.
    connections.close_all()
    connections["default"].close_pool()
    header(f"{title}: {len(all_ids)} hosts, {shards} process(es)")
    watchers = Watchers(shards, data_dir)
    sampler = _psycopg_connect(db.url)
    result = {"threads": [0] * shards, "pg": 0, "offline_s": None, "online_s": None}
    false_online = 0
    watching_at = None
    try:
        started = time.monotonic()
        watchers.start()
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            if watching_at is None and watchers.watching():
                watching_at = now
            elapsed = now - (watching_at or started)
            threads = watchers.threads()
            result["threads"] = [max(a, b) for a, b in zip(result["threads"], threads, strict=True)]
            rows = sampler.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (db.name,),
            ).fetchone()
            result["pg"] = max(result["pg"], int(rows[0]))
            statuses = dict(sampler.execute("SELECT id, status FROM hosts_host").fetchall())
            offline = sum(1 for pk in unreachable if statuses.get(pk) == "offline")
            online_bad = sum(1 for pk in unreachable if statuses.get(pk) == "online")
            online = sum(1 for pk in healthy if statuses.get(pk) == "online")
            false_online = max(false_online, online_bad)
            if watching_at is None:
                continue
            if result["offline_s"] is None and offline == len(unreachable):
                result["offline_s"] = elapsed
            if result["online_s"] is None and online == len(healthy):
                result["online_s"] = elapsed
            if result["offline_s"] is not None and result["online_s"] is not None:
                if elapsed >= 35:  # past one reconcile interval: its round has run too
                    break
            if elapsed > SETTLE_TIMEOUT:
                note(
                    f"not settled after {SETTLE_TIMEOUT:.0f} s: {offline}/{len(unreachable)} "
                    f"offline, {online}/{len(healthy)} online"
                )
                break
        if watching_at is None:
            raise BenchError(f"the watchers never started:\n{watchers.log_tail()}")
        result["startup_s"] = watching_at - started
        errors = dict(
            sampler.execute(
                "SELECT id, last_error FROM hosts_host WHERE id = ANY(%s)", (list(unreachable),)
            ).fetchall()
        )
    finally:
        watchers.stop()
        sampler.close()
    result["false_online"] = false_online
    result["errors"] = errors
    return result


def report(title: str, result: dict, limit_s: float, hosts: int) -> None:
    figure(f"{title} seconds from start to watching (Django set up)", result["startup_s"], "s", 1)
    for index, count in enumerate(result["threads"]):
        figure(f"{title} threads, process {index}", count)
    figure(f"{title} database connections (all processes, max)", result["pg"])
    offline_s = result["offline_s"]
    figure(
        f"{title} seconds from watching until every unreachable host was offline",
        offline_s if offline_s is not None else "never",
        "s" if offline_s is not None else "",
        1,
    )
    online_s = result["online_s"]
    figure(
        f"{title} seconds from watching until every healthy host was online",
        online_s if online_s is not None else "never",
        "s" if online_s is not None else "",
        1,
    )
    figure(f"{title} unreachable hosts ever seen online", result["false_online"])
    samples = sorted(set(result["errors"].values()), key=len)[:2]
    for message in samples:
        note(f"an offline host's error: {message}")


def main() -> None:
    with BenchDatabase() as db, bench_environment(db) as data_dir, SilentPort() as silent:
        os.environ.setdefault("PADDOCK_DB_POOL_MAX", "8")
        setup_django_and_migrate()
        from django.conf import settings
        from django.db import connections

        from hosts.models import Host

        paddock = settings.PADDOCK
        interval = float(paddock["RECONCILE_SECONDS"])
        appliers = int(paddock["WATCHER_APPLIERS"])
        openers = int(paddock["WATCHER_OPENERS"])
        pool_max = int(os.environ["PADDOCK_DB_POOL_MAX"])
        note(
            f"reconcile interval {interval:g} s, connect timeout {paddock['CONNECT_TIMEOUT']} s, "
            f"{openers} openers, {appliers} appliers, database pool {os.environ['PADDOCK_DB_POOL_MAX']}"
        )
        kinds = make_hosts(data_dir, silent)
        hosts = sum(len(v) for v in kinds.values())
        note(
            f"{len(kinds['refused'])} refused, {len(kinds['silent'])} silent (SYNs dropped), "
            f"{len(kinds['healthy'])} healthy test-driver hosts"
        )

        # The baseline: only ~20 of the hosts exist (the others' rows kept aside meanwhile).
        small = baseline_ids(kinds)
        keep = {pk for ids in small.values() for pk in ids}
        aside = list(Host.objects.exclude(pk__in=keep).values())
        Host.objects.exclude(pk__in=keep).delete()
        base = run("baseline", db, small, 1, data_dir)
        report("baseline", base, interval, len(keep))
        Host.objects.bulk_create([Host(**row) for row in aside], batch_size=500)
        connections.close_all()

        one = run("one shard", db, kinds, 1, data_dir)
        report("one shard", one, interval, hosts)
        two = run("two shards", db, kinds, 2, data_dir)
        report("two shards", two, interval, hosts)

        header("goals")
        thread_limit = max(base["threads"]) + openers + CALL_THREADS_IDLE
        for title, result, shards in (("one shard", one, 1), ("two shards", two, 2)):
            offline_s = result["offline_s"]
            goal_line(
                f"{title}: every unreachable host offline within one reconcile interval",
                round(offline_s if offline_s is not None else float("inf"), 1),
                "s",
                interval,
                offline_s is not None and offline_s <= interval and not result["false_online"],
            )
            goal_line(
                f"{title}: threads do not grow with hosts (max per process, {hosts} hosts vs "
                f"{max(base['threads'])} at {len(keep)})",
                max(result["threads"]),
                "threads",
                thread_limit,
                max(result["threads"]) <= thread_limit,
            )
            pg_limit = shards * pool_max
            goal_line(
                f"{title}: database connections within PADDOCK_DB_POOL_MAX per process",
                result["pg"],
                "connections",
                pg_limit,
                result["pg"] <= pg_limit,
            )
        if one["online_s"] is None or two["online_s"] is None:
            raise BenchError("healthy test-driver hosts did not all come online")


if __name__ == "__main__":
    run_main(main)
