"""Policy + VM + host topology + ledger -> TuningPlan (pure; filled in by its owner)."""

from __future__ import annotations

from .plan import TuningPlan
from .topology import HostTopology, LedgerView, VmFacts


class NoFit(Exception):
    """The policy cannot be applied to the VM on this host; ``reasons`` say exactly why."""

    def __init__(self, reasons: list[str]):
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)


def compile(
    knobs: dict,
    vm: VmFacts,
    host: HostTopology,
    ledger: LedgerView,
    *,
    policy: str = "",
    version: int = 0,
    current_xml: str = "",
) -> TuningPlan:
    raise NotImplementedError
