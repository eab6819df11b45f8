"""libvirt's event loop: one per process, for the host watchers and the consoles alike.

libvirt dispatches everything asynchronous through one event loop implementation per process:
domain, pool and network event callbacks, keepalive pings (a dead peer is only noticed while
the loop runs), the remote driver's socket, and the callbacks of non-blocking streams (the
serial console). libvirt's rules for it (``virEventRegisterImpl``,
``virEventRegisterDefaultImpl``): register it early, before the connections that need it are
opened (a connection opened before has no event handling); once registered it cannot be
replaced; and it must then run continuously.

Two implementations exist in libvirt-python: libvirt's own poll loop
(``virEventRegisterDefaultImpl``, run by calling ``virEventRunDefaultImpl`` in a loop) and
``libvirtaio``, which dispatches the same callbacks from an asyncio event loop. Paddock uses
the first, run by one daemon thread, for every caller:

* The watchers live in processes that have no asyncio loop at all (``manage.py watch_hosts``,
  the embedded runner's threads, Celery workers); ``libvirtaio`` would need one created and run
  forever for them anyway.
* ``libvirtaio`` ties every libvirt callback of the process to one asyncio loop: the loop of
  whoever registered first. Under Channels that loop serves every websocket, so a slow
  callback would stall consoles and live pages, and a stalled loop would stall keepalive for
  all connections, the watchers' included; an ``async_to_sync`` or test loop that is closed
  later would leave libvirt with a dead dispatcher that cannot be replaced.
* The console's stream callbacks need nothing of asyncio: on the event thread they read what
  the stream has (non-blocking, never waiting) and hand the bytes to the websocket's loop with
  ``loop.call_soon_threadsafe`` (``hosts.driver.console.SerialBackend``). Neither loop can
  block the other.

:func:`ensure_event_loop` registers and starts it, once, thread-safe; call it before opening a
connection that needs events, keepalive or streams (the watchers and the serial console do).
No other module registers an event implementation.
"""

from __future__ import annotations

import logging
import threading
import time

import libvirt

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def _run() -> None:
    """Run libvirt's event loop for the life of the process."""
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # pragma: no cover - a callback raised; keep the loop going
            logger.exception("libvirt event loop iteration failed")
            time.sleep(0.1)  # never spin on an error that repeats


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and run it in a daemon thread.

    Idempotent and thread-safe: the first call registers and starts the loop, every later call
    returns at once. Call it before opening the connections that need the loop (event
    callbacks, keepalive, non-blocking streams).
    """
    global _thread
    if _thread is not None:
        return
    with _lock:
        if _thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run, name="libvirt-events", daemon=True)
        thread.start()
        _thread = thread


def event_loop_running() -> bool:
    """Whether this process has registered and runs libvirt's event loop."""
    return _thread is not None and _thread.is_alive()
