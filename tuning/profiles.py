"""The built-in profiles: platform policies every tenant may use and copy, never edit.

- ``balanced`` — Paddock's behaviour without a policy (every knob ``default``).
- ``latency-critical`` — 1:1 pinning on whole cores with the siblings kept idle, emulator
  threads on their own pCPU, memory strictly on the pinned node, 2 MiB hugepages, locked, no
  balloon, cache=none io=native, multiqueue = vCPUs, KVM halt polling.
- ``throughput`` — dedicated vCPUs, strict NUMA, 2 MiB hugepages, an I/O thread per VM with
  the disks on it, cache=none io=native, multiqueue.
- ``dense`` — many small VMs per host: shared vCPUs, balloon with stats and autodeflate, KSM
  on, writeback cache off (none) with threads.
"""

from __future__ import annotations

import copy

from django.db import transaction

from .knobs import DEFAULTS, clean
from .models import TuningPolicy, TuningPolicyVersion

DESCRIPTIONS = {
    "balanced": "Paddock's defaults: shared vCPUs, no pinning, cache=none io=native disks.",
    "latency-critical": "Dedicated whole cores, isolated emulator thread, strict NUMA, "
    "2 MiB hugepages, no balloon: lowest and steadiest latency.",
    "throughput": "Dedicated vCPUs, strict NUMA, 2 MiB hugepages, an I/O thread, multiqueue.",
    "dense": "Shared vCPUs, ballooning with autodeflate and KSM: the most VMs per host.",
}


def _profile(**groups) -> dict:
    knobs = copy.deepcopy(DEFAULTS)
    for group, values in groups.items():
        knobs[group].update(values)
    return clean(knobs)


BUILTINS: dict[str, dict] = {
    "balanced": _profile(),
    "latency-critical": _profile(
        cpu={
            "placement": "dedicated-isolate-siblings",
            "emulator": "isolate",
            "model": "host-passthrough",
            "topology": "auto",
        },
        numa={"mode": "strict"},
        memory={
            "hugepages": "2M",
            "locked": True,
            "nosharepages": True,
            "balloon": {"enabled": False, "period": 0, "autodeflate": False},
        },
        disk={"cache": "none", "io": "native", "queues": "vcpus"},
        network={"queues": "vcpus", "rx_queue_size": 1024},
        host={"halt_poll_ns": 200000, "irq_affinity": True},
    ),
    "throughput": _profile(
        cpu={"placement": "dedicated", "iothreads": 1, "topology": "auto"},
        numa={"mode": "strict"},
        memory={
            "hugepages": "2M",
            "balloon": {"enabled": False, "period": 0, "autodeflate": False},
        },
        disk={"cache": "none", "io": "native", "queues": "vcpus", "iothread": True},
        network={"queues": "vcpus"},
    ),
    "dense": _profile(
        memory={"balloon": {"enabled": True, "period": 10, "autodeflate": True}},
        disk={"cache": "none", "io": "threads"},
        host={"ksm": True},
    ),
}


def ensure_builtins():
    """Create or refresh the built-in platform policies (idempotent). Returns them by name."""
    out = {}
    with transaction.atomic():
        for name, knobs in BUILTINS.items():
            policy, created = TuningPolicy.objects.get_or_create(
                name=name,
                tenant=None,
                defaults={"builtin": True, "knobs": knobs, "description": DESCRIPTIONS[name]},
            )
            if not created and policy.knobs != knobs:
                policy.version += 1
                policy.knobs = knobs
                policy.builtin = True
                policy.save(update_fields=["version", "knobs", "builtin", "updated"])
            TuningPolicyVersion.objects.get_or_create(
                policy=policy, version=policy.version, defaults={"knobs": policy.knobs}
            )
            out[name] = policy
    return out
