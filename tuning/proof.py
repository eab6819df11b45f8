"""Before/after windows of each applied change from the metrics history.

For every tuning change a VM went through (the plan applied now, ``VmTuning``, and the
``vm.tune`` tasks that succeeded, newest first, at most :data:`MAX_CHANGES`), the VM's metric
rings are read around the moment the change was applied: the :data:`WINDOW` seconds before it
and the :data:`WINDOW` seconds after it (up to now). Each side gives, per metric, the average
and maximum of the rows it holds and how many rows that is; a side without rows says
``points: 0`` with no numbers ("insufficient data"), never an estimate.

The finest tier whose ring still reaches back to the window is read (10 s rows for the last
hour, 1 min rows for the last day, hourly rows after that). A row is counted on one side only
when it lies wholly on that side of the change, so the row the change fell into is left out;
on the hourly and daily tiers a window is at least one row long.

Disk latency is not recorded by the collector (no such VM metric): it is not shown rather
than guessed.
"""

from __future__ import annotations

import time
from datetime import datetime

from metrics.store import RANGES, TIERS, VM_METRICS, get_store
from panel.choices import TaskState
from panel.models import Task

from .models import TuningPolicyVersion, VmTuning

WINDOW = 30 * 60  # seconds on each side of a change
MAX_CHANGES = 5
INSUFFICIENT = "insufficient data"

#: what the proof compares, in the order shown (only metrics the store records)
PROOF_METRICS = tuple(
    name
    for name in (
        "vcpu_delay_percent",
        "cpu_percent",
        "disk_read_iops",
        "disk_write_iops",
        "disk_read_bps",
        "disk_write_bps",
        "net_rx_bps",
        "net_tx_bps",
        "net_rx_pps",
        "net_tx_pps",
    )
    if name in VM_METRICS
)


def _ranges_by_step() -> list[tuple[str, str]]:
    """``(tier, range name)`` from the finest tier to the coarsest; per tier the range that
    shows the most of its ring."""
    best: dict[str, tuple[int, str]] = {}
    for name, (tier, span) in RANGES.items():
        if tier not in best or span > best[tier][0]:
            best[tier] = (span, name)
    return sorted(((t, n) for t, (_s, n) in best.items()), key=lambda item: TIERS[item[0]].step)


_RANGES_BY_STEP = _ranges_by_step()


def proof_for(vm, now: float | None = None) -> dict:
    """``{"changes": [{"applied_at", "policy", "version", "task", "plan_summary",
    "before": {metric: {"avg", "max", "points"}}, "after": {...}, "delta": {metric: ...},
    "window": {...}, "status"}]}``, newest change first."""
    now = time.time() if now is None else float(now)
    return {
        "window_seconds": WINDOW,
        "metrics": list(PROOF_METRICS),
        "changes": [_change(vm, change, now) for change in changes_of(vm)],
    }


# --- the changes ------------------------------------------------------------------------------


def changes_of(vm) -> list[dict]:
    """``[{"applied_at": datetime, "policy", "version", "task": id | None, "plan": {...},
    "knobs": {...} | None}]`` newest first, at most :data:`MAX_CHANGES`."""
    tuning = VmTuning.objects.filter(vm=vm).select_related("applied_version__policy").first()
    tasks = list(
        Task.objects.filter(vm=vm, kind="vm.tune", state=TaskState.SUCCEEDED)
        .exclude(finished__isnull=True)
        .order_by("-finished", "-id")[:MAX_CHANGES]
    )
    version_ids = {
        (t.params or {}).get("version_id")
        for t in tasks
        if isinstance((t.params or {}).get("version_id"), int)
    }
    versions = {
        v.pk: v
        for v in TuningPolicyVersion.objects.filter(pk__in=version_ids).select_related("policy")
    }
    out = []
    seen_tasks = set()
    for task in tasks:
        params = task.params or {}
        plan = params.get("tuning") if isinstance(params.get("tuning"), dict) else {}
        version = versions.get(params.get("version_id"))
        applied_at = task.finished
        if tuning and tuning.applied_task_id == task.pk and tuning.applied_at:
            applied_at = tuning.applied_at
            plan = tuning.plan or plan
        out.append(
            {
                "applied_at": applied_at,
                "policy": version.policy.name if version else (plan.get("policy") or None),
                "version": version.version if version else (plan.get("version") or None),
                "task": task.pk,
                "plan": plan,
                "knobs": version.knobs if version else None,
            }
        )
        seen_tasks.add(task.pk)
    if tuning and tuning.applied_at and tuning.applied_task_id not in seen_tasks:
        applied = tuning.applied_version
        plan = tuning.plan or {}
        out.append(
            {
                "applied_at": tuning.applied_at,
                "policy": applied.policy.name if applied else (plan.get("policy") or None),
                "version": applied.version if applied else (plan.get("version") or None),
                "task": tuning.applied_task_id,
                "plan": plan,
                "knobs": applied.knobs if applied else None,
            }
        )
    out.sort(key=lambda c: c["applied_at"], reverse=True)
    return out[:MAX_CHANGES]


def plan_summary(plan: dict, knobs: dict | None = None) -> dict:
    """The few facts of a plan people compare: placement, pins, NUMA mode, hugepages, disks."""
    plan = plan if isinstance(plan, dict) else {}
    domain = plan.get("domain") if isinstance(plan.get("domain"), dict) else {}
    pins = {str(k): str(v) for k, v in (domain.get("vcpupin") or {}).items()}
    placement = ((knobs or {}).get("cpu") or {}).get("placement")
    if not placement:
        uses = {a.get("use") for a in ((plan.get("allocations") or {}).get("cpus") or [])}
        placement = (
            "dedicated-isolate-siblings"
            if "sibling" in uses
            else "dedicated"
            if pins or "vcpu" in uses
            else "shared"
        )
    numatune = domain.get("numatune") or {}
    pages = (domain.get("memory_backing") or {}).get("pages") or []
    sizes = sorted({int(p.get("size_kib") or 0) for p in pages if p.get("size_kib")})
    hugepages = ", ".join(_page_name(s) for s in sizes) or "none"
    disks = domain.get("disks") or {}
    cache = sorted({str(d.get("cache")) for d in disks.values() if d.get("cache")})
    io = sorted({str(d.get("io")) for d in disks.values() if d.get("io")})
    return {
        "placement": placement,
        "pins": pins,
        "numa": numatune.get("mode") or "none",
        "hugepages": hugepages,
        "disk_cache": ", ".join(cache) or "default",
        "disk_io": ", ".join(io) or "default",
    }


def _page_name(size_kib: int) -> str:
    if size_kib % 1048576 == 0:
        return f"{size_kib // 1048576}G"
    if size_kib % 1024 == 0:
        return f"{size_kib // 1024}M"
    return f"{size_kib}K"


# --- the windows ------------------------------------------------------------------------------


def _change(vm, change: dict, now: float) -> dict:
    applied: datetime = change["applied_at"]
    at = applied.timestamp()
    window = _windows(vm.pk, at, now)
    before, after = window.pop("before_stats"), window.pop("after_stats")
    delta = {}
    for name in PROOF_METRICS:
        b, a = before[name], after[name]
        delta[name] = round(a["avg"] - b["avg"], 3) if b["points"] and a["points"] else None
    has_before = any(before[n]["points"] for n in PROOF_METRICS)
    has_after = any(after[n]["points"] for n in PROOF_METRICS)
    return {
        "applied_at": applied.isoformat(),
        "policy": change["policy"],
        "version": change["version"],
        "task": change["task"],
        "plan_summary": plan_summary(change["plan"], change["knobs"]),
        "before": before,
        "after": after,
        "delta": delta,
        "window": window,
        "status": "ok" if has_before and has_after else INSUFFICIENT,
    }


def _windows(vm_id: int, at: float, now: float) -> dict:
    """The before/after statistics from the finest tier that has rows on both sides of
    ``at`` (else the finest with rows on one side, else the finest that reaches back)."""
    store = get_store()
    found = []
    last = _RANGES_BY_STEP[-1][0]
    for tier_name, range_name in _RANGES_BY_STEP:
        tier = TIERS[tier_name]
        width = max(WINDOW, tier.step)
        if now - RANGES[range_name][1] > at - width and tier_name != last:
            continue  # this ring no longer reaches back to the start of the window
        data = store.series("vm", vm_id, range_name, now=now)
        before = _side(data, tier.step, lo=at - width, hi=at)
        after = _side(data, tier.step, lo=at, hi=min(at + width, now + tier.step))
        found.append(
            {
                "range": range_name,
                "resolution": tier.step,
                "before": {"from": int(at - width), "to": int(at)},
                "after": {"from": int(at), "to": int(min(at + width, now))},
                "before_stats": before,
                "after_stats": after,
            }
        )
        if _points(before) and _points(after):
            return found[-1]
    return next(
        (f for f in found if _points(f["before_stats"]) or _points(f["after_stats"])), found[0]
    )


def _points(stats: dict) -> int:
    return sum(stats[n]["points"] for n in PROOF_METRICS)


def _side(data: dict, step: int, *, lo: float, hi: float) -> dict:
    """Per metric, the rows lying wholly in ``[lo, hi)``: avg, max and how many."""
    out = {}
    maxes = data.get("max") or {}
    for name in PROOF_METRICS:
        rows = [v for ts, v in data["series"].get(name, []) if ts >= lo and ts + step <= hi]
        if not rows:
            out[name] = {"avg": None, "max": None, "points": 0}
            continue
        peaks = [v for ts, v in maxes.get(name, []) if ts >= lo and ts + step <= hi]
        out[name] = {
            "avg": round(sum(rows) / len(rows), 3),
            "max": round(max(peaks or rows), 3),
            "points": len(rows),
        }
    return out
