"""Metric history in bounded round-robin rings: one fixed-size blob per object and resolution.

Each object (a VM, a host, a storage pool) has one ring per tier. A ring is ``slots`` rows of
``step`` seconds; the row of time ``t`` is slot ``(t // step) % slots``, so a ring never grows
and a new point overwrites the row of the same slot one ring-length ago. A row is packed
little-endian::

    uint32 slot start (unix seconds) | uint32 points averaged | float32 avg[k] | float32 max[k]

(``max`` only in the tiers that keep it). A row whose start is not the slot expected for the
asked time is stale and ignored; ``NaN`` is a metric with no value in that row.

Every ingested point updates the current row of *every* tier (running average and maximum), so
the latest minute, hour and day are always readable and no separate rollup job exists. Only
the changed rows are written (``SETRANGE`` in Redis, a slice of a ``bytearray`` in memory),
never a whole ring.

Where the rings live:

* the hot store: Redis when ``REDIS_URL`` is set (shared by the watcher that writes and the web
  processes that read), else the memory of the one embedded process;
* the database (``metrics.MetricRing``, one row per object and persisted tier): a checkpoint of
  the rollup tiers written every ``PADDOCK_METRICS_CHECKPOINT`` seconds for the rings that
  changed, and read back when the hot store does not have a ring (a restart of the embedded
  process, an emptied Redis). The 10-second tier is not persisted: it is the live hour.

A process keeps the current row of each ring it writes (packed, about 100 bytes) so that an
ingest is a write, not a read-modify-write; one writer per object (the watcher of its host) is
assumed.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from .models import MetricRing

NAN = float("nan")

# --- what is stored ---------------------------------------------------------------------------

VM_METRICS = (
    "cpu_percent",
    "vcpu_delay_percent",
    "memory_used_bytes",
    "memory_balloon_bytes",
    "disk_read_bps",
    "disk_write_bps",
    "disk_read_iops",
    "disk_write_iops",
    "net_rx_bps",
    "net_tx_bps",
    "net_rx_pps",
    "net_tx_pps",
)
HOST_METRICS = (
    "cpu_percent",
    "iowait_percent",
    "memory_used_bytes",
    "memory_total_bytes",
    "load1",
    "load5",
    "load15",
    "hugepages_free_bytes",
    "vms_running",
)
POOL_METRICS = ("used_percent", "capacity_bytes", "allocation_bytes", "available_bytes")

METRICS: dict[str, tuple[str, ...]] = {"vm": VM_METRICS, "host": HOST_METRICS, "pool": POOL_METRICS}


@dataclass(frozen=True)
class Tier:
    name: str
    step: int  # seconds per row
    slots: int  # rows in the ring
    keep_max: bool  # rows also hold the maximum of the points they average
    persist: bool  # checkpointed to the database

    @property
    def span(self) -> int:
        return self.step * self.slots


TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("s10", 10, 360, keep_max=False, persist=False),  # the last hour, 10 s
        Tier("m1", 60, 1440, keep_max=False, persist=True),  # the last day, 1 min
        Tier("h1", 3600, 744, keep_max=True, persist=True),  # the last 31 days, 1 h
        Tier("d1", 86400, 366, keep_max=True, persist=True),  # the last year, 1 day
    )
}

# range name -> (tier, seconds shown)
RANGES: dict[str, tuple[str, int]] = {
    "hour": ("s10", 3600),
    "day": ("m1", 86400),
    "week": ("h1", 7 * 86400),
    "month": ("h1", 31 * 86400),
    "year": ("d1", 366 * 86400),
}


class Layout:
    """The packing of one ring: a kind's metrics in a tier."""

    _cache: dict[tuple[str, str], Layout] = {}

    def __init__(self, kind: str, tier: Tier) -> None:
        self.kind = kind
        self.tier = tier
        self.k = len(METRICS[kind])
        self.row = struct.Struct(f"<II{self.k * (2 if tier.keep_max else 1)}f")
        self.size = self.row.size * tier.slots

    @classmethod
    def of(cls, kind: str, tier: str | Tier) -> Layout:
        tier = TIERS[tier] if isinstance(tier, str) else tier
        key = (kind, tier.name)
        layout = cls._cache.get(key)
        if layout is None:
            layout = cls._cache[key] = cls(kind, tier)
        return layout

    def slot_start(self, ts: float) -> int:
        ts = int(ts)
        return ts - ts % self.tier.step

    def offset(self, slot_start: int) -> int:
        return ((slot_start // self.tier.step) % self.tier.slots) * self.row.size

    def merge(self, row: bytes | None, slot_start: int, values: list[float]) -> bytes:
        """The row after adding one point to it (a new row when it holds another slot)."""
        k = self.k
        if row:
            fields = self.row.unpack(row)
        if not row or fields[0] != slot_start or fields[1] == 0:
            if self.tier.keep_max:
                return self.row.pack(slot_start, 1, *values, *values)
            return self.row.pack(slot_start, 1, *values)
        n = fields[1]
        avg = list(fields[2 : 2 + k])
        for i, v in enumerate(values):
            if v != v:  # NaN: no value this time
                continue
            a = avg[i]
            avg[i] = v if a != a else a + (v - a) / (n + 1)
        if self.tier.keep_max:
            mx = list(fields[2 + k :])
            for i, v in enumerate(values):
                if v == v and not (mx[i] >= v):  # also replaces NaN
                    mx[i] = v
            return self.row.pack(slot_start, n + 1, *avg, *mx)
        return self.row.pack(slot_start, n + 1, *avg)

    def rows(self, blob: bytes | None, start: float, end: float) -> list[tuple]:
        """Rows of the ring whose slot starts in ``(start, end]``, oldest first."""
        out = []
        if not blob:
            return out
        size = self.row.size
        for off in range(0, min(len(blob), self.size) - size + 1, size):
            fields = self.row.unpack_from(blob, off)
            ts = fields[0]
            # The row must be the one this slot holds for its time (not a stale wrap-around).
            if fields[1] and start < ts <= end and self.offset(ts) == off:
                out.append(fields)
        out.sort(key=lambda f: f[0])
        return out


def _clean(values: dict[str, float | None], names: tuple[str, ...]) -> list[float]:
    out = []
    for name in names:
        v = values.get(name)
        if v is None:
            out.append(NAN)
        else:
            v = float(v)
            out.append(v if math.isfinite(v) else NAN)
    return out


def _num(v: float, digits: int = 3) -> float | None:
    if v != v:
        return None
    return round(v, digits)


# --- hot stores -------------------------------------------------------------------------------


class MemoryBackend:
    """Rings in this process's memory: the embedded default."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytearray] = {}
        self._latest: dict[str, dict[int, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            blob = self._blobs.get(key)
            return bytes(blob) if blob is not None else None

    def exists_many(self, keys: list[str]) -> list[bool]:
        with self._lock:
            return [k in self._blobs for k in keys]

    def get_ranges(self, ranges: list[tuple[str, int, int]]) -> list[bytes | None]:
        out = []
        with self._lock:
            for key, off, length in ranges:
                blob = self._blobs.get(key)
                out.append(None if blob is None else bytes(blob[off : off + length]))
        return out

    def set_ranges(self, writes: list[tuple[str, int, int, bytes]]) -> None:
        """``(key, ring size, offset, data)``. Like Redis ``SETRANGE``, a ring grows
        (zero-filled) only up to the rows written so far, at most to its full size."""
        with self._lock:
            for key, _size, off, data in writes:
                blob = self._blobs.get(key)
                if blob is None:
                    blob = self._blobs[key] = bytearray()
                end = off + len(data)
                if len(blob) < end:
                    blob.extend(bytes(end - len(blob)))
                blob[off:end] = data

    def put_many(self, items: dict[str, bytes]) -> None:
        with self._lock:
            for key, data in items.items():
                self._blobs[key] = bytearray(data)

    def delete(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._blobs.pop(key, None)

    def set_latest(self, name: str, mapping: dict[int, bytes]) -> None:
        with self._lock:
            self._latest.setdefault(name, {}).update(mapping)

    def get_latest(self, name: str, ids: list[int] | None = None) -> dict[int, bytes]:
        with self._lock:
            latest = self._latest.get(name, {})
            if ids is None:
                return dict(latest)
            return {i: latest[i] for i in ids if i in latest}

    def del_latest(self, name: str, ids: Iterable[int]) -> None:
        with self._lock:
            latest = self._latest.get(name, {})
            for i in ids:
                latest.pop(i, None)

    def nbytes(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._blobs.values())

    def clear(self) -> None:
        with self._lock:
            self._blobs.clear()
            self._latest.clear()


class RedisBackend:
    """Rings as Redis strings written with ``SETRANGE``: the production shape."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def _k(self, key: str) -> str:
        return self.prefix + key

    def get(self, key: str) -> bytes | None:
        return self.client.get(self._k(key))

    def exists_many(self, keys: list[str]) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(self._k(key))
        return [bool(x) for x in pipe.execute()]

    def get_ranges(self, ranges: list[tuple[str, int, int]]) -> list[bytes | None]:
        pipe = self.client.pipeline(transaction=False)
        for key, off, length in ranges:
            pipe.exists(self._k(key))
            pipe.getrange(self._k(key), off, off + length - 1)
        res = pipe.execute()
        return [res[i + 1] if res[i] else None for i in range(0, len(res), 2)]

    def set_ranges(self, writes: list[tuple[str, int, int, bytes]], chunk: int = 5000) -> None:
        for i in range(0, len(writes), chunk):
            pipe = self.client.pipeline(transaction=False)
            for key, _size, off, data in writes[i : i + chunk]:
                pipe.setrange(self._k(key), off, data)
            pipe.execute()

    def put_many(self, items: dict[str, bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, data in items.items():
            pipe.set(self._k(key), data)
        pipe.execute()

    def delete(self, keys: Iterable[str]) -> None:
        keys = [self._k(k) for k in keys]
        if keys:
            self.client.delete(*keys)

    def set_latest(self, name: str, mapping: dict[int, bytes]) -> None:
        if mapping:
            self.client.hset(self._k("latest:" + name), mapping=mapping)

    def get_latest(self, name: str, ids: list[int] | None = None) -> dict[int, bytes]:
        key = self._k("latest:" + name)
        if ids is None:
            return {int(k): v for k, v in self.client.hgetall(key).items()}
        if not ids:
            return {}
        values = self.client.hmget(key, ids)
        return {i: v for i, v in zip(ids, values, strict=True) if v is not None}

    def del_latest(self, name: str, ids: Iterable[int]) -> None:
        ids = list(ids)
        if ids:
            self.client.hdel(self._k("latest:" + name), *ids)

    def nbytes(self) -> int:
        total = 0
        for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
            total += self.client.strlen(key) if self.client.type(key) == b"string" else 0
        return total

    def clear(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            self.client.delete(*keys[i : i + 1000])


# --- the store --------------------------------------------------------------------------------


def ring_key(kind: str, obj_id: int, tier: str) -> str:
    return f"{kind}:{obj_id}:{tier}"


class MetricStore:
    """Ingest points and read series of VMs, hosts and pools."""

    def __init__(self, backend, *, persist: bool = True, checkpoint_seconds: float = 3600) -> None:
        self.backend = backend
        self.persist = persist
        self.checkpoint_seconds = checkpoint_seconds
        self._current: dict[str, bytes] = {}  # ring key -> packed current row (writer side)
        self._dirty: set[tuple[str, int, str]] = set()
        self._last_checkpoint = time.monotonic()
        self._lock = threading.Lock()

    # -- writing ---------------------------------------------------------------------------

    def ingest(self, kind: str, ts: float, points: dict[int, dict[str, float | None]]) -> int:
        """Add one point per object (``{obj_id: {metric: value}}``) at ``ts``; every tier's
        current row is updated. Returns the bytes written to the hot store."""
        if not points:
            return 0
        names = METRICS[kind]
        layouts = [Layout.of(kind, t) for t in TIERS.values()]
        cleaned = {obj_id: _clean(values, names) for obj_id, values in points.items()}
        with self._lock:
            self._seed(kind, list(cleaned), layouts, ts)
            writes = []
            for layout in layouts:
                slot = layout.slot_start(ts)
                off = layout.offset(slot)
                tier = layout.tier.name
                for obj_id, values in cleaned.items():
                    key = ring_key(kind, obj_id, tier)
                    row = layout.merge(self._current.get(key), slot, values)
                    self._current[key] = row
                    writes.append((key, layout.size, off, row))
                    if layout.tier.persist:
                        self._dirty.add((kind, obj_id, tier))
            latest_fmt = struct.Struct(f"<d{len(names)}f")
            latest = {obj_id: latest_fmt.pack(float(ts), *v) for obj_id, v in cleaned.items()}
        self.backend.set_ranges(writes)
        self.backend.set_latest(kind, latest)
        return sum(len(w[3]) for w in writes) + sum(len(v) for v in latest.values())

    def _seed(self, kind: str, ids: list[int], layouts: list[Layout], ts: float) -> None:
        """Fill this process's current rows for rings it has not written yet: from the hot
        store, and a ring missing there from its database checkpoint."""
        missing = [
            (obj_id, layout)
            for layout in layouts
            for obj_id in ids
            if ring_key(kind, obj_id, layout.tier.name) not in self._current
        ]
        if not missing:
            return
        keys = [ring_key(kind, obj_id, layout.tier.name) for obj_id, layout in missing]
        exists = self.backend.exists_many(keys)
        absent: dict[str, list[int]] = {}
        for (obj_id, layout), present in zip(missing, exists, strict=True):
            if not present and layout.tier.persist:
                absent.setdefault(layout.tier.name, []).append(obj_id)
        if absent and self.persist:
            self._load_from_db(kind, absent)
        ranges = []
        for obj_id, layout in missing:
            off = layout.offset(layout.slot_start(ts))
            ranges.append((ring_key(kind, obj_id, layout.tier.name), off, layout.row.size))
        rows = self.backend.get_ranges(ranges)
        for (key, _off, length), row in zip(ranges, rows, strict=True):
            self._current[key] = row if row and len(row) == length else b""

    def _load_from_db(self, kind: str, absent: dict[str, list[int]]) -> int:
        loaded = {}
        for tier, ids in absent.items():
            for i in range(0, len(ids), 1000):
                rows = MetricRing.objects.filter(
                    kind=kind, tier=tier, object_id__in=ids[i : i + 1000]
                ).values_list("object_id", "data")
                for obj_id, data in rows:
                    if len(data) == Layout.of(kind, tier).size:
                        loaded[ring_key(kind, obj_id, tier)] = bytes(data)
        if loaded:
            self.backend.put_many(loaded)
        return len(loaded)

    def forget(self, kind: str, ids: Iterable[int]) -> None:
        """Drop the rings of objects that are gone for good."""
        ids = list(ids)
        keys = [ring_key(kind, i, t) for i in ids for t in TIERS]
        with self._lock:
            for key in keys:
                self._current.pop(key, None)
            self._dirty.difference_update((kind, i, t) for i in ids for t in TIERS)
        self.backend.delete(keys)
        self.backend.del_latest(kind, ids)
        if self.persist:
            try:
                MetricRing.objects.filter(kind=kind, object_id__in=ids).delete()
            except Exception:
                pass

    def checkpoint(self, force: bool = False) -> int:
        """Write the changed rollup rings to the database; returns the rings written."""
        if not self.persist:
            return 0
        now = time.monotonic()
        if not force and (
            self.checkpoint_seconds <= 0 or now - self._last_checkpoint < self.checkpoint_seconds
        ):
            return 0
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            self._last_checkpoint = now
        written = 0
        batch = []
        stamp = timezone.now()
        for kind, obj_id, tier in sorted(dirty):
            blob = self.backend.get(ring_key(kind, obj_id, tier))
            if blob is None:
                continue
            size = Layout.of(kind, tier).size
            blob = blob[:size].ljust(size, b"\0")
            batch.append(
                MetricRing(kind=kind, object_id=obj_id, tier=tier, data=blob, updated=stamp)
            )
            if len(batch) >= 500:
                written += self._upsert(MetricRing, batch)
                batch = []
        if batch:
            written += self._upsert(MetricRing, batch)
        return written

    @staticmethod
    def _upsert(model, batch: list) -> int:
        model.objects.bulk_create(
            batch,
            update_conflicts=True,
            unique_fields=["kind", "object_id", "tier"],
            update_fields=["data", "updated"],
        )
        return len(batch)

    # -- reading ---------------------------------------------------------------------------

    def ring(self, kind: str, obj_id: int, tier: str) -> bytes | None:
        blob = self.backend.get(ring_key(kind, obj_id, tier))
        if blob is None and self.persist and TIERS[tier].persist:
            try:
                row = (
                    MetricRing.objects.filter(kind=kind, object_id=obj_id, tier=tier)
                    .values_list("data", flat=True)
                    .first()
                )
            except Exception:
                row = None
            blob = bytes(row) if row is not None else None
        return blob

    def series(self, kind: str, obj_id: int, range_name: str, now: float | None = None) -> dict:
        """``{"range", "step", "series": {metric: [[ts, v], …]}, "max": {…}}`` (``max`` only
        for tiers that keep it), oldest first; rows without a value are left out."""
        if range_name not in RANGES:
            raise KeyError(range_name)
        tier_name, span = RANGES[range_name]
        layout = Layout.of(kind, tier_name)
        now = time.time() if now is None else now
        rows = layout.rows(self.ring(kind, obj_id, tier_name), now - span, now)
        names = METRICS[kind]
        k = layout.k
        series: dict[str, list] = {name: [] for name in names}
        maxes: dict[str, list] = {name: [] for name in names} if layout.tier.keep_max else {}
        for fields in rows:
            ts = fields[0]
            for i, name in enumerate(names):
                v = _num(fields[2 + i])
                if v is not None:
                    series[name].append([ts, v])
                if maxes:
                    m = _num(fields[2 + k + i])
                    if m is not None:
                        maxes[name].append([ts, m])
        out = {"range": range_name, "step": layout.tier.step, "series": series}
        if maxes:
            out["max"] = maxes
        return out

    def latest(self, kind: str, ids: list[int] | None = None) -> dict[int, dict]:
        """The last point of each object: ``{id: {"ts": …, "values": {metric: v}}}``."""
        names = METRICS[kind]
        fmt = struct.Struct(f"<d{len(names)}f")
        out = {}
        for obj_id, raw in self.backend.get_latest(kind, ids).items():
            if len(raw) != fmt.size:
                continue
            ts, *values = fmt.unpack(raw)
            out[obj_id] = {
                "ts": int(ts),
                "values": {n: _num(v) for n, v in zip(names, values, strict=True)},
            }
        return out


def bytes_per_object(kind: str) -> dict[str, int]:
    """The size of each tier's ring for one object of ``kind`` (and the total)."""
    sizes = {name: Layout.of(kind, tier).size for name, tier in TIERS.items()}
    sizes["total"] = sum(sizes.values())
    return sizes


# --- the process's store ----------------------------------------------------------------------

_store: MetricStore | None = None
_store_lock = threading.Lock()


def _prefix() -> str:
    """Keys are namespaced per database, so installations (and test runs) sharing one Redis
    database never read each other's rings."""
    name = str(connection.settings_dict.get("NAME") or "")
    return "paddock:metrics:" + hashlib.sha1(name.encode()).hexdigest()[:8] + ":"


def get_store() -> MetricStore:
    global _store
    with _store_lock:
        if _store is None:
            paddock = getattr(settings, "PADDOCK", {})
            checkpoint = float(
                paddock.get(
                    "METRICS_CHECKPOINT", os.environ.get("PADDOCK_METRICS_CHECKPOINT", "3600")
                )
            )
            url = getattr(settings, "REDIS_URL", "")
            backend = RedisBackend(url, _prefix()) if url else MemoryBackend()
            _store = MetricStore(backend, checkpoint_seconds=checkpoint)
        return _store


def reset_store(clear: bool = True) -> None:
    """Forget the process's store (tests); with ``clear`` also empty its hot store."""
    global _store
    with _store_lock:
        if _store is not None and clear:
            _store.backend.clear()
        _store = None
