"""Plans: what a task will change, computed by a service, applied by a job, undone on failure.

A service validates a request and computes a :class:`Plan`: ordered :class:`Step` objects of
three kinds,

- ``domain``: changes to a hypervisor domain (define or update its XML, attach a device, start);
- ``storage``: storage actions (create or clone a volume);
- ``host``: host-executor actions, by name with validated arguments (none yet);

plus what the change needs (a restart of the guest, say) and what it will create. The plan is
stored on the task (``task.params["plan"]``, JSON) and the task's job applies it step by step
with :func:`apply`. Each step's handler records every object it creates the moment it exists
(``run.record``), and the plan is saved right then, so a failure, or the recovery of a task
whose worker died, undoes exactly what was recorded (:func:`rollback`), newest first, and
nothing else.

This module is the shape only: it knows no app. Apps register the handlers of the steps they
use (``register_step``) and the undo of what those steps create (``register_undo``), at import
of their jobs module. Tuning, fabric and migration add step actions, not new shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

DOMAIN = "domain"
STORAGE = "storage"
HOST = "host"
STEP_KINDS = (DOMAIN, STORAGE, HOST)


class PlanError(Exception):
    """A plan names a step or an object kind no app registered a handler for."""


@dataclass
class Step:
    """One change: its kind (domain, storage, host), the action by name and its arguments.

    ``id`` names the step's result (``run.outputs[id]``) for later steps: a define step finds
    the path of the volume an earlier storage step made. ``describe`` is for people (the plan
    shown before it runs, the task log).
    """

    kind: str
    action: str
    args: dict = field(default_factory=dict)
    id: str = ""
    describe: str = ""

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise PlanError(f"Unknown step kind {self.kind!r}: use {', '.join(STEP_KINDS)}.")


@dataclass
class Plan:
    """Ordered steps, what they need and will create, and what applying them did so far."""

    steps: list[Step] = field(default_factory=list)
    #: why the guest must restart for the change to take effect (empty: it need not)
    restart: list[str] = field(default_factory=list)
    #: what the plan will create, as the service knows it beforehand (shown, not trusted)
    creates: list[dict] = field(default_factory=list)
    #: what applying it created, recorded as it happened: what rollback removes
    created: list[dict] = field(default_factory=list)
    #: results of steps that have an id
    outputs: dict[str, Any] = field(default_factory=dict)
    #: how many steps were applied in full
    done: int = 0

    def add(self, kind: str, action: str, *, id: str = "", describe: str = "", **args) -> Step:
        step = Step(kind=kind, action=action, args=args, id=id, describe=describe)
        self.steps.append(step)
        return step

    @property
    def needs_restart(self) -> bool:
        return bool(self.restart)

    @property
    def finished(self) -> bool:
        return self.done >= len(self.steps)

    def created_of(self, kind: str) -> list[dict]:
        return [obj for obj in self.created if obj.get("kind") == kind]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        data = dict(data or {})
        steps = [Step(**s) for s in data.pop("steps", [])]
        return cls(steps=steps, **data)


# --- handlers -----------------------------------------------------------------------------

#: apply(step, run): make the change; record what it creates with run.record, return a result
StepHandler = Callable[[Step, "PlanRun"], Any]
#: undo(obj, context): remove one created object; a text for people when something was removed
UndoHandler = Callable[[dict, Any], "str | None"]

_steps: dict[tuple[str, str], StepHandler] = {}
_undo: dict[str, UndoHandler] = {}


def register_step(kind: str, action: str, handler: StepHandler | None = None):
    """Register the handler of the ``kind``/``action`` step (usable as a decorator)."""
    if kind not in STEP_KINDS:
        raise PlanError(f"Unknown step kind {kind!r}: use {', '.join(STEP_KINDS)}.")

    def register(fn: StepHandler) -> StepHandler:
        _steps[(kind, action)] = fn
        return fn

    return register(handler) if handler is not None else register


def register_undo(kind: str, handler: UndoHandler | None = None):
    """Register how to remove a created object of ``kind`` (usable as a decorator)."""

    def register(fn: UndoHandler) -> UndoHandler:
        _undo[kind] = fn
        return fn

    return register(handler) if handler is not None else register


def handler_for(step: Step) -> StepHandler:
    try:
        return _steps[(step.kind, step.action)]
    except KeyError:
        raise PlanError(f"No handler for {step.kind} step {step.action!r}.") from None


# --- applying -----------------------------------------------------------------------------


class PlanRun:
    """One application of a plan: the context handlers work in, and the recording of what
    they create. ``save(plan)`` persists the plan (on the task); it runs after every record
    and every step, so recovery after a crash sees what existed at that moment."""

    def __init__(self, plan: Plan, context: Any, save: Callable[[Plan], None]) -> None:
        self.plan = plan
        self.context = context
        self._save = save

    @property
    def outputs(self) -> dict[str, Any]:
        return self.plan.outputs

    def record(self, kind: str, **ref) -> dict:
        """Note an object the current step created (or is about to create: record before a
        call that cannot report back when it dies halfway); saved at once."""
        obj = {"kind": kind, **ref}
        self.plan.created.append(obj)
        self._save(self.plan)
        return obj


def apply(
    plan: Plan,
    context: Any,
    save: Callable[[Plan], None],
    *,
    before: Callable[[Step, int], None] | None = None,
    after: Callable[[Step, int], None] | None = None,
    check: Callable[[], None] | None = None,
) -> Plan:
    """Apply the plan's remaining steps in order. ``before``/``after`` are called around each
    step with its index (for progress and log lines). A failing step's exception propagates;
    what was recorded until then stays on the plan for :func:`rollback`. ``check`` runs
    before each step, the plan's safe points: it raises to stop there (a task's cancel), and
    what the steps before it made is rolled back as on a failure."""
    run = PlanRun(plan, context, save)
    for index in range(plan.done, len(plan.steps)):
        step = plan.steps[index]
        handler = handler_for(step)
        if check is not None:
            check()
        if before is not None:
            before(step, index)
        result = handler(step, run)
        if step.id:
            plan.outputs[step.id] = result
        plan.done = index + 1
        save(plan)
        if after is not None:
            after(step, index)
    return plan


def rollback(
    plan: Plan, context: Any, *, on_error: Callable[[dict, Exception], None] | None = None
) -> list[str]:
    """Undo what the plan recorded, newest first. Returns what was removed, for people. An
    object whose undo fails is reported to ``on_error`` (when given) and kept; the others are
    still undone."""
    removed = []
    for obj in reversed(plan.created):
        undo = _undo.get(obj.get("kind", ""))
        if undo is None:
            raise PlanError(f"No undo for created {obj.get('kind')!r}.")
        try:
            text = undo(obj, context)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(obj, exc)
            continue
        if text:
            removed.append(text)
    return removed
