"""Live events: from an out-of-band libvirt change to the message on a websocket client.

Production shape, against a throwaway database: ``uvicorn paddock.asgi:application`` and
``manage.py watch_hosts`` (the host watchers and the periodic reconcile) as two processes, the
Redis channel layer between them. ``qemu:///system`` is added as a host (synced once by this
script), and a diskless guest named ``paddockbench-events-<pid>`` is defined on it through a
separate libvirt connection, as ``virsh`` would.

Measured:

(a) **Event-to-websocket latency.** One websocket client (``websockets``, token auth,
    subscribed to the guest's VM) and 100 out-of-band state changes: ``create()`` and
    ``destroy()`` alternately on the separate connection. The time runs from the libvirt call
    returning to the ``vm.updated`` message with the new state arriving on the client.
(b) **Fan-out.** 500 websocket clients on loopback, all subscribed to the same VM, and 50
    updates (``suspend()``/``resume()`` alternately): for each update the delivery time to each
    client (from the libvirt call returning), p50/p95/max over all deliveries, and the
    messages lost (a client without the update 10 s after it). The 500 clients share this
    script's one event loop, so the client side adds its own queueing to the figures.

The server gets a settings module that raises the Redis socket timeout of the channel layer to
15 s: with redis-py's default of 5 s, equal to channels_redis's 5 s blocking receive, an idle
websocket consumer dies with "Timeout reading from ...". The script says so when it runs.

At the end, also on failure, Ctrl-C or SIGTERM: both processes are stopped by their PIDs, the
guest is destroyed and undefined, and the database is dropped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO_ROOT,
    BenchDatabase,
    BenchError,
    Server,
    bench_environment,
    figure,
    goal,
    header,
    load_line,
    note,
    percentile,
    run_main,
    setup_django_and_migrate,
    summary_ms,
)

URI = "qemu:///system"
CHANGES = int(os.environ.get("BENCH_EVENTS_CHANGES", "100"))
CLIENTS = int(os.environ.get("BENCH_EVENTS_CLIENTS", "500"))
UPDATES = 50
CONNECT_BATCH = 50
DELIVERY_TIMEOUT = 10.0

SETTINGS_MODULE = '''\
"""Settings of the events benchmark: the real ones, with a Redis socket timeout above
channels_redis's 5 s blocking receive."""

from paddock.settings import *  # noqa: F403

if REDIS_URL:  # noqa: F405
    CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [  # noqa: F405
        {"address": REDIS_URL, "socket_timeout": 15}  # noqa: F405
    ]
'''


class Watcher:
    """``manage.py watch_hosts`` in a subprocess, stopped by its PID."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "watch_hosts", "--rescan", "1"],
            cwd=REPO_ROOT, env=dict(os.environ), stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def diskless_xml(name: str, virt_type: str) -> str:
    import uuid

    return (
        f"<domain type='{virt_type}'><name>{name}</name><uuid>{uuid.uuid4()}</uuid>"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>"
        "<devices><memballoon model='none'/></devices></domain>"
    )


def define_guest(conn, name: str):
    import libvirt

    from hosts.kvm import kvm_usable

    virt = "kvm" if kvm_usable() else "qemu"
    dom = conn.defineXML(diskless_xml(name, virt))
    try:
        dom.create()
    except libvirt.libvirtError:
        if virt != "kvm":
            raise
        dom.undefine()
        dom = conn.defineXML(diskless_xml(name, "qemu"))
        dom.create()
    dom.destroy()
    return dom


def remove_guest(conn, name: str) -> None:
    import libvirt

    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefine()


async def open_client(url: str, token: str, vm_id: int):
    from websockets.asyncio.client import connect

    ws = await connect(
        url,
        additional_headers={"Authorization": f"Token {token}"},
        origin="http://127.0.0.1",
        open_timeout=30,
        max_queue=None,
    )
    hello = json.loads(await ws.recv())
    if hello.get("type") != "hello":
        raise BenchError(f"unexpected first message: {hello}")
    await ws.send(json.dumps({"subscribe": {"vms": [vm_id]}}))
    reply = json.loads(await ws.recv())
    if reply.get("vms") != [vm_id]:
        raise BenchError(f"subscription refused: {reply}")
    return ws


async def measure_latency(url: str, token: str, vm_id: int, dom) -> list[float]:
    ws = await open_client(url, token, vm_id)
    samples = []
    try:
        for i in range(CHANGES):
            action, state = (dom.create, "running") if i % 2 == 0 else (dom.destroy, "shutoff")
            await asyncio.to_thread(action)
            returned = time.perf_counter()
            deadline = returned + DELIVERY_TIMEOUT
            while True:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise BenchError(f"change {i} ({state}) never reached the client")
                message = json.loads(await asyncio.wait_for(ws.recv(), remaining))
                if message.get("type") == "vm.updated" and message.get("state") == state:
                    samples.append(time.perf_counter() - returned)
                    break
    finally:
        await ws.close()
    return samples


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (``/proc/<pid>/stat``), whatever the load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure_fanout(url: str, token: str, vm_id: int, dom, server_pid: int) -> dict:
    clients = []
    rss_before = rss_kib(server_pid)
    started = time.perf_counter()
    for i in range(0, CLIENTS, CONNECT_BATCH):
        batch = min(CONNECT_BATCH, CLIENTS - i)
        clients += await asyncio.gather(*(open_client(url, token, vm_id) for _ in range(batch)))
    connect_s = time.perf_counter() - started
    rss_per_client = (rss_kib(server_pid) - rss_before) / max(len(clients), 1)
    current = {"index": -1, "state": "", "at": 0.0}
    got: list[dict[int, float]] = [{} for _ in clients]
    received = [0] * UPDATES  # clients that have update k, counted as they arrive
    arrived = asyncio.Event()

    async def reader(n: int, ws) -> None:
        try:
            async for raw in ws:
                message = json.loads(raw)
                k = current["index"]
                if (
                    message.get("type") == "vm.updated"
                    and message.get("state") == current["state"]
                    and k not in got[n]
                ):
                    got[n][k] = time.perf_counter() - current["at"]
                    received[k] += 1
                    if received[k] == CLIENTS:
                        arrived.set()
        except Exception:
            pass  # closed at the end

    readers = [asyncio.create_task(reader(n, ws)) for n, ws in enumerate(clients)]
    deliveries, lost, per_update = [], 0, []
    cpu_before = cpu_seconds(server_pid)
    try:
        for k in range(UPDATES):
            action, state = (dom.suspend, "paused") if k % 2 == 0 else (dom.resume, "running")
            await asyncio.to_thread(action)
            current.update(index=k, state=state, at=time.perf_counter())
            deadline = current["at"] + DELIVERY_TIMEOUT
            arrived.clear()
            if received[k] < CLIENTS:
                try:
                    await asyncio.wait_for(arrived.wait(), max(0.0, deadline - time.perf_counter()))
                except TimeoutError:
                    pass
            times = [g[k] for g in got if k in g]
            lost += CLIENTS - len(times)
            deliveries += times
            if times:
                per_update.append(max(times))
        server_cpu = cpu_seconds(server_pid) - cpu_before
    finally:
        for ws in clients:
            await ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return {
        "connect_s": connect_s,
        "deliveries": deliveries,
        "lost": lost,
        "last_client": per_update,
        "server_cpu_per_update": server_cpu / UPDATES,
        "rss_per_client_kib": rss_per_client,
    }


def report(title: str, samples: list[float]) -> None:
    stats = summary_ms(samples)
    for key in ("p50", "p95", "mean", "min", "max"):
        figure(f"{title} {key}", stats[key], "ms", 1)


def main() -> None:
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    if not os.environ.get("REDIS_URL"):
        raise BenchError("needs REDIS_URL: the production shape uses the Redis channel layer")
    name = f"paddockbench-events-{os.getpid()}"
    conn = libvirt.open(URI)
    server = watcher = None
    with BenchDatabase() as db, bench_environment(db) as data_dir:
        (data_dir / "bench_events_settings.py").write_text(SETTINGS_MODULE)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), str(data_dir), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        sys.path.insert(0, str(data_dir))
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench_events_settings"
        note("channel layer: Redis socket timeout 15 s (the default 5 s drops idle consumers)")
        try:
            setup_django_and_migrate()
            from django.contrib.auth import get_user_model

            from hosts.models import Host
            from hosts.sync import sync_host
            from panel.models import ApiToken
            from vms.models import VirtualMachine

            admin = get_user_model().objects.create_user(
                "bench-admin", password=None, is_superuser=True, is_staff=True
            )
            _token, raw = ApiToken.issue(user=admin, name="bench")
            dom = define_guest(conn, name)
            host = Host.objects.create(name="local", uri=URI)
            started = time.perf_counter()
            summary = sync_host(host)
            figure("first sync of qemu:///system", time.perf_counter() - started, "s")
            note(f"{summary['domains']} domains on the host")
            vm = VirtualMachine.objects.get(host=host, uuid=dom.UUIDString())

            server = Server(data_dir / "uvicorn.log")
            server.start()
            watcher = Watcher(data_dir / "watcher.log")
            watcher.start()
            url = f"ws://127.0.0.1:{server.port}/ws/events/"

            # The watcher is up once it reports a change made now.
            async def warm_up() -> None:
                ws = await open_client(url, raw, vm.pk)
                try:
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        await asyncio.to_thread(dom.create)
                        try:
                            while True:
                                message = json.loads(await asyncio.wait_for(ws.recv(), 3))
                                if message.get("state") == "running":
                                    return
                        except TimeoutError:
                            pass
                        finally:
                            await asyncio.to_thread(dom.destroy)
                    raise BenchError(f"the watcher never reported:\n{watcher.log_tail()}")
                finally:
                    await ws.close()

            asyncio.run(warm_up())
            time.sleep(1)  # the destroy of the warm-up reaches the inventory

            header(f"(a) event-to-websocket latency, {CHANGES} out-of-band start/destroy")
            samples = asyncio.run(measure_latency(url, raw, vm.pk, dom))
            report("latency", samples)
            ok = goal(
                "out-of-band change -> vm.updated, 1 client, p95",
                summary_ms(samples)["p95"],
                "ms",
                250,
            )

            header(f"(b) fan-out: {CLIENTS} websocket clients, {UPDATES} suspend/resume updates")
            if not dom.isActive():  # an odd BENCH_EVENTS_CHANGES leaves it running
                dom.create()
            time.sleep(1)
            result = asyncio.run(measure_fanout(url, raw, vm.pk, dom, server.proc.pid))
            figure(f"connecting {CLIENTS} clients", result["connect_s"], "s")
            if result["deliveries"]:
                report("delivery", result["deliveries"])
                ok &= goal(
                    f"fan-out to {CLIENTS} clients, delivery p95",
                    summary_ms(result["deliveries"])["p95"],
                    "ms",
                    250,
                )
                figure(
                    "last client per update p50",
                    percentile(result["last_client"], 50) * 1000,
                    "ms",
                    1,
                )
                figure(
                    "last client per update p95",
                    percentile(result["last_client"], 95) * 1000,
                    "ms",
                    1,
                )
            figure(
                "web process CPU per update to all clients",
                result["server_cpu_per_update"] * 1000,
                "ms",
                1,
            )
            figure(
                "web process memory per connected client", result["rss_per_client_kib"], "KiB", 1
            )
            figure("messages delivered", len(result["deliveries"]))
            figure("messages lost", result["lost"])
            ok &= goal("messages lost", result["lost"], "messages", 1, 0)
            note(load_line("after the fan-out"))
            print("PASS" if ok else "FAIL", flush=True)
            if result["lost"]:
                raise BenchError(f"{result['lost']} messages lost")
        finally:
            if watcher is not None:
                watcher.stop()
            if server is not None:
                server.stop()
            remove_guest(conn, name)
            conn.close()


if __name__ == "__main__":
    run_main(main)
