"""Deadlines for calls that block in C: run a call in a call thread, give up after N seconds.

libvirt-python calls block inside libvirt (the GIL released) and cannot be cancelled from Python:
a host whose libvirtd is busy probing QEMU, or a peer that accepted a connection and then fell
silent, keeps the calling thread waiting for as long as it likes. So the driver runs each host
call in a call thread and waits for it at most ``seconds``. When the time is up the caller gets
:class:`CallTimeout` naming the call and goes on; the call thread stays blocked until the host
answers or its connection dies (the connection is closed and dropped from the cache by the
``on_timeout`` hook of the caller), then returns to the pool of idle call threads.

Call threads are reused: a call costs a queue hand-over, not a thread start. A call thread that
is still blocked is simply not idle; the next call gets another one.

Public API::

    run(fn, *args, seconds=30, what="getCapabilities", **kwargs)  # -> fn's result
    CallTimeout  # raised after ``seconds``; ``.what`` and ``.seconds`` name the call

``seconds=None`` runs the call directly in the caller's thread (no deadline).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

MAX_IDLE_THREADS = 8


class CallTimeout(Exception):
    """A call did not return within its deadline; the message names it."""

    def __init__(self, what: str, seconds: float) -> None:
        self.what = what
        self.seconds = seconds
        super().__init__(f"{what} did not answer within {seconds:g} s.")


class _Call:
    __slots__ = ("args", "done", "error", "fn", "kwargs", "result")

    def __init__(self, fn: Callable, args: tuple, kwargs: dict) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def execute(self) -> None:
        try:
            self.result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # handed to the caller, who re-raises it
            self.error = exc
        finally:
            self.fn = self.args = self.kwargs = None
            self.done.set()


class _CallThread(threading.Thread):
    def __init__(self, number: int) -> None:
        super().__init__(name=f"paddock-call-{number}", daemon=True)
        self.calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            call = self.calls.get()
            call.execute()
            del call
            if not _release(self):
                return


_idle: list[_CallThread] = []
_lock = threading.Lock()
_started = 0


def _acquire() -> _CallThread:
    global _started
    with _lock:
        if _idle:
            return _idle.pop()
        _started += 1
        number = _started
    thread = _CallThread(number)
    thread.start()
    return thread


def _release(thread: _CallThread) -> bool:
    """Put a call thread back among the idle ones; False when there are enough (it ends)."""
    with _lock:
        if len(_idle) >= MAX_IDLE_THREADS:
            return False
        _idle.append(thread)
        return True


def run(fn: Callable, *args, seconds: float | None, what: str = "", **kwargs):
    """``fn(*args, **kwargs)``, but raise :class:`CallTimeout` if it has not returned after
    ``seconds`` (it goes on in its call thread; its result is then dropped)."""
    if seconds is None:
        return fn(*args, **kwargs)
    call = _Call(fn, args, kwargs)
    _acquire().calls.put(call)
    if not call.done.wait(seconds):
        raise CallTimeout(what or getattr(fn, "__name__", "a call"), seconds)
    if call.error is not None:
        error, call.error = call.error, None
        raise error
    return call.result


def busy_threads() -> int:
    """Call threads started and not idle (blocked in a call, or about to return): for tests."""
    with _lock:
        return sum(1 for t in threading.enumerate() if isinstance(t, _CallThread)) - len(_idle)
