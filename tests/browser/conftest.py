"""What the browser tests share: the ASGI server, committed test-driver hosts, a headless
Chromium page that fails its test on a JavaScript error, logging in and screenshots.

pytest-django's ``live_server`` speaks WSGI only; pages that need websockets run against
``asgi_server`` (the ASGI application under uvicorn in a thread of this process, so the
in-memory channel layer and the test-driver connection are shared with the test). Screenshots
go to test-artifacts/.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import expect, sync_playwright

from paddock import embedded
from paddock.celery import app as celery_app
from tests.conftest import add_and_sync_host

# Playwright's sync API runs an event loop in the test's thread; the ORM calls the test makes
# next to it are ordinary blocking calls, which Django would otherwise refuse inside a loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Every browser test module: ``pytestmark = BROWSER``.
BROWSER = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs the system Chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def asgi_server(transactional_db, settings):
    """paddock.asgi.application under uvicorn in a thread, on the test database; its base URL."""
    import uvicorn
    from channels.layers import channel_layers

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    port = _free_port()
    config = uvicorn.Config(
        "paddock.asgi:application",
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    channel_layers.backends.clear()


@pytest.fixture
def live_host(transactional_db, admin_user, node_uri):
    """A simulated host, added and synced through the service (committed, so a server thread
    sees it)."""
    host = add_and_sync_host(admin_user, node_uri)
    assert host.status == "online", host.last_error
    return host


@pytest.fixture
def watched_host(transactional_db, admin_user, node_uri):
    """A simulated host, synced, with its watcher running in this process."""
    from hosts.watcher import HostWatcher, ensure_event_loop, wait_until

    # The event loop must exist before the shared test-driver connection opens.
    ensure_event_loop()
    host = add_and_sync_host(admin_user, node_uri)
    assert host.status == "online", host.last_error
    watcher = HostWatcher(host.pk).start()
    assert watcher.ready.wait(15), watcher.last_error
    assert wait_until(lambda: watcher.stats["reconciles"] >= 1, 30)
    yield host
    watcher.stop()


@pytest.fixture
def worker_thread(settings):
    """Tasks go to the embedded Celery worker (a thread, the in-memory broker) instead of running
    inside the request: the worker and the page race as they do in production. As in the
    embedded default, every task goes to the one queue it consumes (with REDIS_URL set, tasks
    would otherwise go to their host's queue, which this worker may not have joined yet)."""
    settings.EMBEDDED = True
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    worker = embedded.start_worker(concurrency=2)
    yield worker
    worker.stop()
    celery_app.conf.task_always_eager = eager


@pytest.fixture
def open_page():
    """``open_page(init_script=None)``: a page in a fresh headless Chromium. The page records
    the URLs it requests (``page.requests``) and the websockets it opens (``page.sockets``); a
    JavaScript error on it fails the test."""
    ARTIFACTS.mkdir(exist_ok=True)
    opened = []
    with sync_playwright() as p:

        def open_(init_script: str | None = None):
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu",
                      "--disable-background-networking"],
            )  # fmt: skip
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            if init_script:
                context.add_init_script(init_script)
            page = context.new_page()
            page.set_default_timeout(10_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.requests = []  # type: ignore[attr-defined]
            page.on("request", lambda r: page.requests.append(r.url))  # type: ignore[attr-defined]
            page.sockets = []  # type: ignore[attr-defined]
            page.on("websocket", lambda ws: page.sockets.append(ws.url))  # type: ignore[attr-defined]
            opened.append((browser, context, errors))
            return page

        yield open_
        # ORM calls made while Playwright's loop runs get connections of their own (Django keys
        # connections by context when a loop is running); close them here, in that context, or
        # they outlive the test database.
        connections.close_all()
        for browser, context, _errors in opened:
            context.close()
            browser.close()
    errors = [e for _b, _c, errs in opened for e in errs]
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def page(asgi_server, open_page):
    """A page for the ASGI server (live updates and consoles need its websockets)."""
    return open_page()


def shot(page, name: str, **kwargs) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), **kwargs)


def log_in(
    page, base: str, username: str = "root-admin", password: str = "pw-admin", *,
    start: str = "/login/", screenshot: str | None = None,
) -> None:  # fmt: skip
    """Log in through the form, from ``start`` (any other page redirects to the login form);
    return once the shell's script is live."""
    page.goto(base + start)
    if start != "/login/":
        expect(page).to_have_url(f"{base}/login/?next={start}")
    if screenshot:
        shot(page, screenshot)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page.locator("#tree")).to_be_visible()
    expect(page.locator("html[data-ready]")).to_be_attached()
