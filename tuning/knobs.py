"""The knobs of a tuning policy: their groups, names, allowed values and defaults.

A policy's knobs are a dict of groups, as the API shows them (``/api/tuning-policies/``):

    {
      "cpu": {"placement": "shared|dedicated|dedicated-isolate-siblings",
              "emulator": "share|isolate",
              "iothreads": 0..8,  "iothread_pin": "shared|dedicated",
              "topology": "default|auto" | {"sockets", "cores", "threads"},
              "model": "default|host-passthrough|host-model|<named model>",
              "shares": null | 2..262144, "period": null | 1000..1000000 (µs),
              "quota": null | 1000..17592186044415 (µs; per vCPU per period)},
      "numa": {"mode": "none|strict|preferred|interleave|restrictive"},
      "memory": {"hugepages": "none|2M|1G", "locked": bool, "nosharepages": bool,
                 "balloon": {"enabled": bool, "period": 0..3600 (s), "autodeflate": bool},
                 "hard_limit_mib": null | int, "soft_limit_mib": null | int},
      "disk": {"cache": "default|none|writeback|writethrough|directsync|unsafe",
               "io": "default|native|threads|io_uring",
               "queues": "default|vcpus" | 1..64,
               "iothread": bool, "discard": "default|unmap|ignore",
               "throttle": {"total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
                            "total_iops_sec", "read_iops_sec", "write_iops_sec",
                            "total_bytes_sec_max", ..., "*_max_length": seconds}   # 0 = none
              },
      "network": {"queues": "default|vcpus" | 1..256, "rx_queue_size": null|256..1024 (2^n),
                  "tx_queue_size": null|256..1024 (2^n)},
      "host": {"halt_poll_ns": null | int, "thp": null|"always|madvise|never",
               "ksm": null | bool, "irq_affinity": bool}
    }

``default`` keeps what Paddock writes without a policy (the ``balanced`` profile is all
defaults: today's behaviour). :func:`clean` fills every missing knob with its default and
refuses unknown knobs and impossible combinations with ``ValidationError({"cpu.placement":
...})`` (dotted field names).
"""

from __future__ import annotations

import copy

from django.core.exceptions import ValidationError

PLACEMENTS = ("shared", "dedicated", "dedicated-isolate-siblings")
EMULATOR = ("share", "isolate")
NUMA_MODES = ("none", "strict", "preferred", "interleave", "restrictive")
HUGEPAGES = {"none": 0, "2M": 2048, "1G": 1048576}  # name -> page size in KiB
CACHE_MODES = ("default", "none", "writeback", "writethrough", "directsync", "unsafe")
IO_MODES = ("default", "native", "threads", "io_uring")
DISCARD = ("default", "unmap", "ignore")
THP_MODES = ("always", "madvise", "never")
THROTTLE_KEYS = tuple(
    f"{scope}_{unit}_sec{suffix}"
    for scope in ("total", "read", "write")
    for unit in ("bytes", "iops")
    for suffix in ("", "_max", "_max_length")
)

DEFAULTS: dict = {
    "cpu": {
        "placement": "shared",
        "emulator": "share",
        "iothreads": 0,
        "iothread_pin": "shared",
        "topology": "default",
        "model": "default",
        "shares": None,
        "period": None,
        "quota": None,
    },
    "numa": {"mode": "none"},
    "memory": {
        "hugepages": "none",
        "locked": False,
        "nosharepages": False,
        "balloon": {"enabled": True, "period": 0, "autodeflate": False},
        "hard_limit_mib": None,
        "soft_limit_mib": None,
    },
    "disk": {
        "cache": "default",
        "io": "default",
        "queues": "default",
        "iothread": False,
        "discard": "default",
        "throttle": {key: 0 for key in THROTTLE_KEYS},
    },
    "network": {"queues": "default", "rx_queue_size": None, "tx_queue_size": None},
    "host": {"halt_poll_ns": None, "thp": None, "ksm": None, "irq_affinity": False},
}

MAX_IOTHREADS = 8
MAX_DISK_QUEUES = 64
MAX_NET_QUEUES = 256
QUEUE_SIZES = (256, 512, 1024)
MAX_THROTTLE = 2**53


class _Errors:
    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(errors, group: dict, field: str, key: str, choices) -> None:
    value = group.get(key)
    if value not in choices:
        errors.add(f"{field}.{key}", f"{value!r} is not one of {', '.join(map(str, choices))}.")


def _int_or_none(errors, group: dict, field: str, key: str, lo: int, hi: int) -> None:
    value = group.get(key)
    if value is None:
        return
    if not _is_int(value) or not lo <= value <= hi:
        errors.add(f"{field}.{key}", f"A whole number from {lo} to {hi}, or null; not {value!r}.")


def _bool(errors, group: dict, field: str, key: str, nullable: bool = False) -> None:
    value = group.get(key)
    if not (isinstance(value, bool) or (nullable and value is None)):
        errors.add(f"{field}.{key}", f"true or false{' or null' if nullable else ''}.")


def _merge(defaults: dict, given, field: str, errors) -> dict:
    """Defaults overlaid with ``given``; a key the defaults do not have is an unknown knob."""
    if not isinstance(given, dict):
        errors.add(field or "knobs", "An object of knob groups.")
        return dict(defaults)
    out = {}
    for key in given:
        if key not in defaults:
            name = f"{field}.{key}" if field else key
            errors.add(name, f"Unknown knob {name!r}.")
    for key, default in defaults.items():
        value = given.get(key, default)
        if isinstance(default, dict) and key != "topology":
            out[key] = _merge(default, value, f"{field}.{key}" if field else key, errors)
        else:
            out[key] = copy.deepcopy(value)
    return out


def clean(knobs) -> dict:
    """Every knob, defaults filled in, checked one by one and together.

    Raises ``ValidationError`` naming each bad knob by its dotted path (``disk.io``) with the
    reason; an unknown knob is refused, not ignored.
    """
    errors = _Errors()
    k = _merge(DEFAULTS, knobs if knobs is not None else {}, "", errors)
    if errors.errors:
        raise ValidationError(errors.errors)

    cpu, numa, mem, disk, net, host = (
        k["cpu"], k["numa"], k["memory"], k["disk"], k["network"], k["host"]
    )  # fmt: skip
    _choice(errors, cpu, "cpu", "placement", PLACEMENTS)
    _choice(errors, cpu, "cpu", "emulator", EMULATOR)
    _choice(errors, cpu, "cpu", "iothread_pin", ("shared", "dedicated"))
    if not _is_int(cpu["iothreads"]) or not 0 <= cpu["iothreads"] <= MAX_IOTHREADS:
        errors.add("cpu.iothreads", f"A whole number from 0 to {MAX_IOTHREADS}.")
    topo = cpu["topology"]
    if isinstance(topo, dict):
        unknown = set(topo) - {"sockets", "dies", "cores", "threads"}
        if unknown:
            errors.add("cpu.topology", f"Unknown topology keys: {', '.join(sorted(unknown))}.")
        for part in ("sockets", "cores", "threads"):
            if not _is_int(topo.get(part)) or not 1 <= topo[part] <= 512:
                errors.add(f"cpu.topology.{part}", "A whole number from 1 to 512.")
        if "dies" in topo and (not _is_int(topo["dies"]) or not 1 <= topo["dies"] <= 64):
            errors.add("cpu.topology.dies", "A whole number from 1 to 64.")
    elif topo not in ("default", "auto"):
        errors.add("cpu.topology", "default, auto, or {sockets, cores, threads}.")
    model = cpu["model"]
    if not isinstance(model, str) or not model or len(model) > 64:
        errors.add("cpu.model", "default, host-passthrough, host-model or a named CPU model.")
    elif model not in ("default", "host-passthrough", "host-model"):
        if not all(c.isalnum() or c in "-_." for c in model):
            errors.add("cpu.model", f"{model!r} is not a CPU model name.")
    _int_or_none(errors, cpu, "cpu", "shares", 2, 262144)
    _int_or_none(errors, cpu, "cpu", "period", 1000, 1000000)
    _int_or_none(errors, cpu, "cpu", "quota", 1000, 17592186044415)
    if cpu["quota"] is not None and cpu["period"] is None:
        errors.add("cpu.quota", "A quota needs a period (µs) to be a share of.")
    if cpu["placement"] != "shared" and cpu["quota"] is not None:
        errors.add("cpu.quota", "A dedicated pCPU is the VM's own: a quota would only waste it.")

    _choice(errors, numa, "numa", "mode", NUMA_MODES)
    if cpu["placement"] != "shared" and numa.get("mode") == "interleave":
        errors.add(
            "numa.mode", "Dedicated vCPUs sit on known nodes: use strict, preferred or restrictive."
        )

    _choice(errors, mem, "memory", "hugepages", tuple(HUGEPAGES))
    _bool(errors, mem, "memory", "locked")
    _bool(errors, mem, "memory", "nosharepages")
    balloon = mem["balloon"]
    _bool(errors, balloon, "memory.balloon", "enabled")
    _bool(errors, balloon, "memory.balloon", "autodeflate")
    if not _is_int(balloon["period"]) or not 0 <= balloon["period"] <= 3600:
        errors.add("memory.balloon.period", "Seconds from 0 (off) to 3600.")
    if not balloon["enabled"] and (balloon["period"] or balloon["autodeflate"]):
        errors.add("memory.balloon", "A disabled balloon has no stats period or autodeflate.")
    if mem["hugepages"] != "none" and balloon["enabled"]:
        errors.add(
            "memory.balloon.enabled",
            "Hugepage-backed memory cannot be ballooned back to the host: disable the balloon.",
        )
    _int_or_none(errors, mem, "memory", "hard_limit_mib", 64, 2**40)
    _int_or_none(errors, mem, "memory", "soft_limit_mib", 64, 2**40)
    if (
        mem["hard_limit_mib"] is not None
        and mem["soft_limit_mib"] is not None
        and mem["soft_limit_mib"] > mem["hard_limit_mib"]
    ):
        errors.add("memory.soft_limit_mib", "The soft limit cannot be above the hard limit.")

    _choice(errors, disk, "disk", "cache", CACHE_MODES)
    _choice(errors, disk, "disk", "io", IO_MODES)
    _choice(errors, disk, "disk", "discard", DISCARD)
    _bool(errors, disk, "disk", "iothread")
    queues = disk["queues"]
    if queues not in ("default", "vcpus") and (
        not _is_int(queues) or not 1 <= queues <= MAX_DISK_QUEUES
    ):
        errors.add("disk.queues", f"default, vcpus, or 1 to {MAX_DISK_QUEUES}.")
    if disk["io"] == "native" and disk["cache"] not in ("default", "none", "directsync"):
        errors.add(
            "disk.io",
            f"io=native needs cache=none or directsync (QEMU opens the image with O_DIRECT); "
            f"cache is {disk['cache']}.",
        )
    if disk["iothread"] and not cpu["iothreads"]:
        errors.add("disk.iothread", "Disks can only use I/O threads the VM has: set cpu.iothreads.")
    throttle = disk["throttle"]
    for key, value in throttle.items():
        if not _is_int(value) or not 0 <= value <= MAX_THROTTLE:
            errors.add(f"disk.throttle.{key}", "A whole number ≥ 0 (0: no limit).")
    if not errors.errors:
        for scope in ("bytes", "iops"):
            total = throttle[f"total_{scope}_sec"]
            split = throttle[f"read_{scope}_sec"] or throttle[f"write_{scope}_sec"]
            if total and split:
                errors.add(
                    f"disk.throttle.total_{scope}_sec",
                    f"A total {scope} limit excludes read/write limits (libvirt refuses both).",
                )
            for prefix in ("total", "read", "write"):
                base, peak = (
                    throttle[f"{prefix}_{scope}_sec"],
                    throttle[f"{prefix}_{scope}_sec_max"],
                )
                length = throttle[f"{prefix}_{scope}_sec_max_length"]
                if peak and not base:
                    errors.add(
                        f"disk.throttle.{prefix}_{scope}_sec_max", "A burst needs a base limit."
                    )
                elif peak and peak < base:
                    errors.add(
                        f"disk.throttle.{prefix}_{scope}_sec_max", "A burst is above the base."
                    )
                if length and not peak:
                    errors.add(
                        f"disk.throttle.{prefix}_{scope}_sec_max_length",
                        "A burst length needs a burst limit.",
                    )

    nq = net["queues"]
    if nq not in ("default", "vcpus") and (not _is_int(nq) or not 1 <= nq <= MAX_NET_QUEUES):
        errors.add("network.queues", f"default, vcpus, or 1 to {MAX_NET_QUEUES}.")
    for key in ("rx_queue_size", "tx_queue_size"):
        if net[key] is not None and (not _is_int(net[key]) or net[key] not in QUEUE_SIZES):
            errors.add(f"network.{key}", "null, 256, 512 or 1024.")

    _int_or_none(errors, host, "host", "halt_poll_ns", 0, 2**31 - 1)
    if host["thp"] is not None and host["thp"] not in THP_MODES:
        errors.add("host.thp", f"null or one of {', '.join(THP_MODES)}.")
    _bool(errors, host, "host", "ksm", nullable=True)
    _bool(errors, host, "host", "irq_affinity")
    if host["irq_affinity"] and cpu["placement"] == "shared":
        errors.add(
            "host.irq_affinity", "Moving IRQs off dedicated pCPUs needs dedicated placement."
        )

    if errors.errors:
        raise ValidationError(errors.errors)
    return k
