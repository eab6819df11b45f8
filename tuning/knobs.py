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
