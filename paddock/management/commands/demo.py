"""Run the panel: migrate, seed the demo, serve.

With no DATABASE_URL/REDIS_URL, everything runs in this one process (SQLite, in-process broker).
With both set, it starts the production shape instead: web, worker, beat and watcher as
separate processes, all stopped together on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from paddock.demo import seed
from paddock.embedded import run
from panel.datadir import secure_data_dir


class Command(BaseCommand):
    help = "Migrate, seed the demo and serve the panel (embedded or production shape)."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=os.environ.get("BIND", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-seed", action="store_true", help="Do not seed demo data.")

    def handle(self, *args, **options):
        call_command("migrate", interactive=False, verbosity=0)
        if not options["no_seed"]:
            seed(stdout=self.stdout)
        url = f"http://{options['bind']}:{options['port']}/"
        mode = "embedded (SQLite, in-process worker)" if settings.EMBEDDED else "production"
        self.stdout.write(
            self.style.SUCCESS(f"Paddock is serving on {url} — {mode}")
            + "\n  Demo login: admin / admin (platform admin; demo only)"
            + "\n  Tenant users: alice, oscar, mia, victor (acme), gina (globex); password = name"
            + "\n  Ctrl-C stops it."
        )
        sys.stdout.flush()
        if settings.EMBEDDED:
            run(options["bind"], options["port"])
        else:
            self.run_production(options["bind"], options["port"])

    def run_production(self, bind: str, port: int) -> None:
        py = sys.executable
        base = os.path.dirname(py)
        commands = {
            "web": [os.path.join(base, "uvicorn"), "paddock.asgi:application",
                    "--host", bind, "--port", str(port), "--log-level", "warning"],
            "worker": [py, "manage.py", "run_worker", "--", "--loglevel", "WARNING",
                       "--concurrency", "2"],
            "beat": [py, "-m", "celery", "-A", "paddock", "beat", "--loglevel", "WARNING",
                     "--schedule", str(settings.DATA_DIR / "celerybeat-schedule")],
            "watcher": [py, "manage.py", "watch_hosts"],
        }  # fmt: skip
        # Beat writes its schedule there: the folder must exist, owner-only, before anything
        # starts (a fresh clone has none), and what the children write in it stays private.
        secure_data_dir(settings.DATA_DIR)

        def stop(_signum, _frame):
            raise KeyboardInterrupt  # a service manager's SIGTERM stops the children too

        signal.signal(signal.SIGTERM, stop)

        def start(name: str) -> subprocess.Popen:
            proc = subprocess.Popen(commands[name], cwd=settings.BASE_DIR, umask=0o077)
            self.stdout.write(f"  started {name} (pid {proc.pid})")
            return proc

        procs = {name: start(name) for name in commands}
        # A process that exits is started again, as the compose file's "restart:
        # unless-stopped" does (a worker can exit on a broker reconnect): after 1 s, doubling
        # to 30 s while it keeps exiting within a minute of its start.
        started = {name: time.monotonic() for name in procs}
        backoff = dict.fromkeys(procs, 1.0)
        due: dict[str, float] = {}
        try:
            while True:
                now = time.monotonic()
                for name, proc in procs.items():
                    if name in due or proc.poll() is None:
                        continue
                    if now - started[name] > 60:
                        backoff[name] = 1.0
                    due[name] = now + backoff[name]
                    self.stderr.write(
                        f"{name} exited with {proc.returncode}; starting it again in "
                        f"{backoff[name]:.0f} s"
                    )
                    backoff[name] = min(backoff[name] * 2, 30.0)
                for name, when in list(due.items()):
                    if when <= now:
                        del due[name]
                        procs[name] = start(name)
                        started[name] = time.monotonic()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for proc in procs.values():
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
