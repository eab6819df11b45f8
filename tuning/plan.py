"""The compiled tuning of one VM on one host: what ``tuning.compile`` returns.

Pure data (JSON round-trip with ``to_dict``/``from_dict``), stored on the apply task
(``task.params["plan"]`` as a ``panel.plans.Plan`` made by :meth:`TuningPlan.to_plan`) and,
once applied, on ``VmTuning.plan`` (the expected state the drift check compares with).

``domain`` is the domain part in Paddock words, written into a domain XML tree by
``tuning.domain.apply_tuning`` (the patch) and read back by ``vms.domxml.parse_domain``:

    {
      "vcpupin": {"0": "1"},                  # vCPU id (str) -> host cpuset
      "emulatorpin": "0",                     # "" = not pinned
      "iothreads": 1,                         # count (0 = none)
      "iothreadpin": {"1": "0"},              # iothread id (str) -> host cpuset
      "shares": 1024, "period": null, "quota": null,   # <cputune> shares / period / quota (µs)
      "cpu": {"mode": "host-passthrough", "model": "",
              "topology": {"sockets": 1, "dies": 1, "cores": 1, "threads": 1} | null,
              "numa_cells": [{"id": 0, "cpus": "0-1", "memory_mib": 1024}]},
      "numatune": {"mode": "strict", "nodeset": "0",
                   "memnodes": [{"cellid": 0, "mode": "strict", "nodeset": "0"}]} | null,
      "memory_backing": {"pages": [{"size_kib": 2048, "nodeset": ""}],
                         "locked": false, "nosharepages": false} | null,
      "memtune": {"hard_limit_mib": null, "soft_limit_mib": null},
      "balloon": {"enabled": true, "period": 10, "autodeflate": true},
      "disks": {"vda": {"cache": "none", "io": "native", "queues": 1, "iothread": 1,
                        "discard": "unmap",
                        "iotune": {"total_bytes_sec": 0, ...}}},   # libvirt's <iotune> names
      "nics": {"52:54:00:..": {"queues": 2, "rx_queue_size": 256, "tx_queue_size": null}}
    }

``live`` lists the changes the running guest can take now, in order, each a dict with ``op``:
``vcpupin`` (vcpu, cpuset), ``emulatorpin`` (cpuset), ``iothreadpin`` (iothread, cpuset),
``schedinfo`` (params: ``cpu_shares``, ``vcpu_period``, ``vcpu_quota``), ``blkiotune``
(target, params: libvirt's block I/O tune names), ``memstats_period`` (seconds),
``numatune_nodeset`` (nodeset; only where the mode allows a live change).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hosts.plan_steps import action_steps
from panel.plans import DOMAIN, Plan


@dataclass
class TuningPlan:
    """What applying a policy to a VM on a host changes, needs and promises."""

    policy: str = ""
    version: int = 0
    host_id: int | None = None
    #: the domain part (see the module doc); persistent: written into the definition
    domain: dict = field(default_factory=dict)
    #: changes the running guest takes now (see the module doc)
    live: list[dict] = field(default_factory=list)
    #: host actions to apply first, in order: ``hosts.actions`` ``to_dict()`` forms
    host_actions: list[dict] = field(default_factory=list)
    #: why the guest must restart before it has all of the plan (empty: it need not)
    restart: list[str] = field(default_factory=list)
    #: what needs the host rebooted (kernel command line), with the line to set; never done
    host_reboot: list[dict] = field(default_factory=list)
    #: [{"field": "cpu.model", "message": "..."}]: applied anyway, but worth knowing
    warnings: list[dict] = field(default_factory=list)
    #: what the ledger must promise: {"cpus": [{"cpu", "node", "use", "serves"}],
    #: "hugepages": [{"node", "size_kib", "pages"}]}
    allocations: dict = field(default_factory=lambda: {"cpus": [], "hugepages": []})
    #: the domain XML now and as the plan makes it, and their unified diff, for people
    xml_before: str = ""
    xml_after: str = ""
    diff: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> TuningPlan:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    @property
    def needs_restart(self) -> bool:
        return bool(self.restart)

    def to_plan(self) -> Plan:
        """The steps a ``vm.tune`` task runs: host actions first (each recorded, so a
        failure reverts them newest first), then the domain definition and the live changes,
        then the read-back that fails the task when the host disagrees."""
        plan = Plan(restart=list(self.restart))
        plan.steps += action_steps(self.host_actions)
        plan.add(
            DOMAIN,
            "tune",
            id="tune",
            domain=self.domain,
            describe="Write the tuned definition and apply what the running guest can take",
        )
        plan.add(
            DOMAIN,
            "verify_tuning",
            id="verify",
            domain=self.domain,
            describe="Read the tuning back from libvirt and compare it with the plan",
        )
        return plan
