"""The shape of a host action, its result, and the registry that rebuilds one from JSON."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from hosts.executor import ActionFailed, ActionRefused, ExecutorError

if TYPE_CHECKING:
    from hosts.executor import Executor

_KINDS: dict[str, type[Action]] = {}


def register(cls: type[Action]) -> type[Action]:
    """Class decorator: make ``cls`` rebuildable from ``to_dict()`` by its ``kind``."""
    if not cls.kind or cls.kind in _KINDS:
        raise ValueError(f"action kind {cls.kind!r} is empty or taken")
    _KINDS[cls.kind] = cls
    return cls


def action_from_dict(data: dict) -> Action:
    """The action ``Action.to_dict()`` described, validated again (the data may come from a
    stored task, so it is input like any other)."""
    if not isinstance(data, dict) or data.get("kind") not in _KINDS:
        raise ActionRefused(f"Unknown host action: {data!r:.200}")
    params = {k: v for k, v in data.items() if k != "kind"}
    try:
        return _KINDS[data["kind"]](**params)
    except TypeError as exc:
        raise ActionRefused(f"Bad parameters for host action {data['kind']}: {exc}") from None


class Action(ABC):
    """One thing to make true on a host. Construction validates every name, path and value,
    so an action that exists is one that may run."""

    kind: ClassVar[str] = ""

    @abstractmethod
    def describe(self) -> str:
        """A short human name: what the task log and error messages call it."""

    @abstractmethod
    def params(self) -> dict:
        """The constructor's keyword arguments, JSON-serializable."""

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.params()}

    @abstractmethod
    def check(self, ex: Executor) -> Any:
        """The current value on the host (runs only reads)."""

    @abstractmethod
    def apply(self, ex: Executor) -> ActionResult:
        """Make the action hold; changes nothing when it already holds."""

    @abstractmethod
    def revert(self, ex: Executor, result: ActionResult) -> ActionResult:
        """Undo what ``result`` says ``apply`` changed."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Action) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.to_dict().items())))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


@dataclass(frozen=True)
class ActionResult:
    """What an apply or revert found and left: enough to revert it later, from JSON too."""

    action: Action
    before: Any
    after: Any
    changed: bool

    def to_dict(self) -> dict:
        return {
            "action": self.action.to_dict(),
            "before": self.before,
            "after": self.after,
            "changed": self.changed,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ActionResult:
        return cls(
            action=action_from_dict(data.get("action")),
            before=data.get("before"),
            after=data.get("after"),
            changed=bool(data.get("changed")),
        )


class ValueAction(Action):
    """One value on the host (a sysfs file, a sysctl, an MTU): ``check`` reads it, ``apply``
    writes the wanted value when it differs and reads it back, ``revert`` writes back the value
    found before. ``value`` None makes a read-only action (check only)."""

    value: Any = None

    @abstractmethod
    def read(self, ex: Executor) -> Any: ...

    @abstractmethod
    def write(self, ex: Executor, value: Any) -> None: ...

    def check(self, ex: Executor) -> Any:
        return self.read(ex)

    def _set(self, ex: Executor, wanted: Any, before: Any) -> Any:
        self.write(ex, wanted)
        after = self.read(ex)
        if after != wanted:
            # The host took the write but holds something else (the kernel reserved fewer
            # hugepages than asked, say): give back what was there and fail.
            try:
                self.write(ex, before)
            except ExecutorError as exc:
                ex.log(f"Could not put back {self.describe()} = {before!r}: {exc}", "error")
            raise ActionFailed(
                f"{ex.name}: {self.describe()}: asked for {wanted!r}, the host holds {after!r}; "
                f"put back {before!r}."
            )
        return after

    def apply(self, ex: Executor) -> ActionResult:
        if self.value is None:
            raise ActionRefused(f"{self.describe()} is read-only here: give a value to apply.")
        before = self.read(ex)
        if before == self.value:
            ex.log(f"{ex.name}: {self.describe()} is already {before!r}: nothing to do")
            return ActionResult(self, before, before, changed=False)
        after = self._set(ex, self.value, before)
        ex.log(f"{ex.name}: {self.describe()}: {before!r} -> {after!r}")
        return ActionResult(self, before, after, changed=True)

    def revert(self, ex: Executor, result: ActionResult) -> ActionResult:
        if not result.changed:
            ex.log(f"{ex.name}: {self.describe()}: nothing was changed, nothing to revert")
            return ActionResult(self, result.after, result.after, changed=False)
        current = self.read(ex)
        if current == result.before:
            ex.log(f"{ex.name}: {self.describe()} is already back at {current!r}")
            return ActionResult(self, current, current, changed=False)
        if current != result.after:
            ex.log(
                f"{ex.name}: {self.describe()} changed since it was applied "
                f"({result.after!r} -> {current!r}); restoring {result.before!r}",
                "warning",
            )
        after = self._set(ex, result.before, current)
        ex.log(f"{ex.name}: {self.describe()} reverted: {current!r} -> {after!r}")
        return ActionResult(self, current, after, changed=True)
