"""The ``host`` steps of a plan: host actions through the executor, recorded for rollback.

A step ``host/apply_action {"action": <Action.to_dict()>}`` applies one action on the task's
host. When it changed something, the result is recorded (``{"kind": "host_action",
"result": ...}``) the moment it exists, so a later failure, or the recovery of a task whose
worker died, reverts it (newest first) and nothing else. The plan's context gives the
executor as ``context.executor``.
"""

from __future__ import annotations

from hosts.actions import ActionResult, action_from_dict
from panel import plans


def action_steps(actions: list[dict]) -> list[plans.Step]:
    """The steps that apply ``actions`` (``Action.to_dict()`` each) in order."""
    steps = []
    for i, action in enumerate(actions):
        params = ", ".join(f"{k}={v}" for k, v in action.items() if k != "kind")
        steps.append(
            plans.Step(plans.HOST, "apply_action", {"action": action}, id=f"host{i}",
                       describe=f"Host action {action.get('kind')}: {params}")
        )  # fmt: skip
    return steps


@plans.register_step(plans.HOST, "apply_action")
def apply_action(step: plans.Step, run: plans.PlanRun) -> dict:
    action = action_from_dict(step.args.get("action"))
    result = run.context.executor.apply(action)
    if result.changed:
        run.record("host_action", result=result.to_dict())
    return result.to_dict()


@plans.register_undo("host_action")
def revert_action(obj: dict, context) -> str | None:
    result = ActionResult.from_dict(obj["result"])
    back = context.executor.revert(result)
    return f"{result.action.describe()} back to {back.after!r}" if back.changed else None
