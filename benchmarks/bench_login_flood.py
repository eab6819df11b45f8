"""Password guessing must not slow down authenticated requests.

A uvicorn server (the production ASGI app on PostgreSQL and Redis, Django's real PBKDF2 hasher)
answers ``GET /api/auth/whoami/`` with an API token, sequentially, first idle and then while 8
threads post wrong passwords to ``POST /api/auth/token/`` as fast as the server answers. Lockouts
and throttles are switched off for this (they stop one attacker after a few attempts; this
measures what is left when the guesses come from everywhere), so every guess costs a full
password hash. Two servers: unbounded (64 password checks at once, how Paddock was before) and
bounded (``PADDOCK_PASSWORD_CHECKS``, default half the CPUs).

Goal: with the bound, the authenticated median under the flood is at most 1.5x the idle median
plus 20 ms.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchDatabase,
    BenchError,
    Server,
    bench_environment,
    figure,
    header,
    note,
    run_main,
    setup_django_and_migrate,
    summary_ms,
)

ATTACKERS = 8
REQUESTS = 30
PASSWORD = "bench-" + uuid.uuid4().hex


def authenticated_latencies(base_url: str, token: str, count: int) -> list[float]:
    import httpx

    samples = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token}"}) as client:
        for _ in range(3):
            client.get("/api/auth/whoami/")
        for _ in range(count):
            start = time.perf_counter()
            resp = client.get("/api/auth/whoami/")
            samples.append(time.perf_counter() - start)
            if resp.status_code != 200:
                raise BenchError(f"whoami -> {resp.status_code}: {resp.text[:200]}")
    return samples


def flood(base_url: str, stop: threading.Event, counts: list[int]) -> None:
    import httpx

    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        while not stop.is_set():
            resp = client.post(
                "/api/auth/token/", json={"username": "bench-admin", "password": "wrong"}
            )
            if resp.status_code not in (401, 403, 429):  # 403: wrong password (no auth classes)
                raise BenchError(f"guess -> {resp.status_code}")
            counts.append(resp.status_code)


def measure(label: str, data_dir: Path, checks: int) -> tuple[float, float]:
    import os

    import httpx

    os.environ["PADDOCK_PASSWORD_CHECKS"] = str(checks)
    with Server(data_dir / f"uvicorn-{label}.log") as server:
        with httpx.Client(base_url=server.base_url) as client:
            resp = client.post(
                "/api/auth/token/", json={"username": "bench-admin", "password": PASSWORD}
            )
            if resp.status_code != 201:
                raise BenchError(f"token -> {resp.status_code}: {resp.text[:200]}")
            token = resp.json()["token"]
        idle = summary_ms(authenticated_latencies(server.base_url, token, REQUESTS))
        stop = threading.Event()
        counts: list[int] = []
        threads = [
            threading.Thread(target=flood, args=(server.base_url, stop, counts), daemon=True)
            for _ in range(ATTACKERS)
        ]
        for t in threads:
            t.start()
        time.sleep(2.0)  # the flood is at full speed
        started = len(counts)
        t0 = time.perf_counter()
        busy = summary_ms(authenticated_latencies(server.base_url, token, REQUESTS))
        guesses_per_s = (len(counts) - started) / (time.perf_counter() - t0)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    header(f"{label}: {checks} password check(s) at once, {ATTACKERS} guessing threads")
    figure(f"{label} idle whoami p50", idle["p50"], "ms")
    figure(f"{label} flooded whoami p50", busy["p50"], "ms")
    figure(f"{label} flooded whoami p95", busy["p95"], "ms")
    figure(f"{label} guesses answered", guesses_per_s, "per s", 1)
    return idle["p50"], busy["p50"]


def main() -> None:
    import os

    with BenchDatabase(prefix="paddock_bench_login") as db, bench_environment(db) as data_dir:
        # Lockouts and throttles off: every guess reaches the password hasher.
        os.environ["PADDOCK_LOGIN_FAILURE_LIMIT"] = "1000000"
        os.environ["PADDOCK_TOKEN_RATE_ADDRESS"] = "1000000/min"
        os.environ["PADDOCK_TOKEN_RATE_USERNAME"] = "1000000/min"
        setup_django_and_migrate()
        from django.contrib.auth import get_user_model

        get_user_model().objects.create_user("bench-admin", password=PASSWORD, is_superuser=True)
        cpus = os.cpu_count() or 2
        note(f"{cpus} CPUs")
        _idle_u, flooded_u = measure("unbounded", data_dir, 64)
        bounded_checks = max(1, cpus // 2)
        idle_b, flooded_b = measure("bounded", data_dir, bounded_checks)
        goal = 1.5 * idle_b + 20.0
        header("result")
        figure("flooded p50 unbounded -> bounded", f"{flooded_u:.1f} ms -> {flooded_b:.1f} ms")
        figure("goal: bounded flooded p50 at most", goal, "ms", 1)
        ok = flooded_b <= goal
        print("PASS" if ok else "FAIL", flush=True)
        if not ok:
            raise BenchError(f"flooded p50 {flooded_b:.1f} ms > goal {goal:.1f} ms")


if __name__ == "__main__":
    run_main(main)
