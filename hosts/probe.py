"""TCP probes for the watchers: is anything listening on a host's SSH port, asked of thousands
of hosts at once by one thread.

Opening a ``qemu+ssh://`` connection starts ssh (through the host's wrapper), and libvirt waits
in C until ssh gives up: tens of milliseconds of CPU for a refused port, the whole connect
timeout for an address that drops packets. For 2,000 unreachable hosts, retried with backoff,
that is more than a watcher process can spend, and more opens in flight than a bounded pool
has threads. So before an open the watcher asks :class:`Prober` whether the port accepts a TCP
connection: non-blocking connects on one selector, each given up after its timeout. Only a
host that answers gets a libvirt open (and its own message if that fails); one that does not is
offline with the probe's reason (refused, unreachable, timed out) and is probed again later.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

logger = logging.getLogger(__name__)

# At most this many connects in flight (file descriptors); the rest wait their turn.
MAX_IN_FLIGHT = 1024

Done = Callable[[str | None], None]  # None: the port accepted; else why not


def probe_message(address: str, port: int, error: int) -> str:
    reason = "Connection timed out" if error == errno.ETIMEDOUT else os.strerror(error)
    return f"Cannot reach {address} port {port}: {reason} (TCP probe before connecting)."


class Prober:
    """One thread, many non-blocking connects: :meth:`submit` ``(address, port, timeout,
    done)``; ``done(None)`` when the port accepts, ``done(message)`` when it refuses, is
    unreachable or does not answer within ``timeout``. ``done`` runs on the prober's thread
    and must not block. ``address`` is an IP address (names are resolved by the caller)."""

    def __init__(self, max_in_flight: int = MAX_IN_FLIGHT, name: str = "watch-probe") -> None:
        self.max_in_flight = max_in_flight
        self.name = name
        self._submitted: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._deadlines: list[tuple[float, int, socket.socket]] = []
        self._in_flight: dict[socket.socket, tuple[str, int, Done]] = {}
        self._seq = itertools.count()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> Prober:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        self._wake()
        if self._thread is not None:
            self._thread.join(5)

    def submit(self, address: str, port: int, timeout: float, done: Done) -> None:
        self._submitted.put((address, port, timeout, done))
        self._wake()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the loop is awake already (its pipe is full) or stopped

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopped:
                self._start_waiting()
                timeout = None
                if self._deadlines:
                    timeout = max(0.0, self._deadlines[0][0] - time.monotonic())
                for key, _mask in self._selector.select(timeout):
                    if key.fileobj is self._wake_r:
                        self._drain_wake()
                        continue
                    sock = key.fileobj
                    self._finish(sock, sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
                self._expire(time.monotonic())
        except Exception:  # pragma: no cover - keep what is in flight from waiting forever
            logger.exception("TCP prober failed")
        finally:
            for sock in list(self._in_flight):
                self._finish(sock, errno.ECANCELED)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _start_waiting(self) -> None:
        while True:
            try:
                self._waiting.append(self._submitted.get_nowait())
            except queue.Empty:
                break
        while self._waiting and len(self._in_flight) < self.max_in_flight:
            self._connect(*self._waiting.popleft())

    def _connect(self, address: str, port: int, timeout: float, done: Done) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self._call(done, probe_message(address, port, exc.errno or errno.EMFILE))
            return
        sock.setblocking(False)
        error = sock.connect_ex((address, port))
        self._in_flight[sock] = (address, port, done)
        if error in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            self._selector.register(sock, selectors.EVENT_WRITE)
            heapq.heappush(self._deadlines, (time.monotonic() + timeout, next(self._seq), sock))
        else:
            self._finish(sock, error)

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _when, _seq, sock = heapq.heappop(self._deadlines)
            if sock in self._in_flight:
                self._finish(sock, errno.ETIMEDOUT)

    def _finish(self, sock: socket.socket, error: int) -> None:
        entry = self._in_flight.pop(sock, None)
        if entry is None:
            return
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
        address, port, done = entry
        self._call(done, None if error == 0 else probe_message(address, port, error))

    @staticmethod
    def _call(done: Done, result: str | None) -> None:
        try:
            done(result)
        except Exception:
            logger.exception("probe callback failed")
