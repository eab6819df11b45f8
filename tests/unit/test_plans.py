"""The Plan shape: JSON round trip, step handlers by kind, recording as it goes, rollback of
exactly what was recorded."""

from __future__ import annotations

import json

import pytest

from panel import plans
from panel.plans import DOMAIN, HOST, STORAGE, Plan, PlanError, Step


class _World:
    """A stand-in host: volumes and domains that handlers make and undo handlers remove."""

    def __init__(self, fail_at: str = "") -> None:
        self.volumes: list[str] = []
        self.domains: list[str] = []
        self.fail_at = fail_at


@pytest.fixture
def handlers():
    saved = (dict(plans._steps), dict(plans._undo))

    @plans.register_step(STORAGE, "t_create_volume")
    def create_volume(step, run):
        if run.context.fail_at == step.args["name"]:
            raise RuntimeError(f"no room for {step.args['name']}")
        path = f"/pool/{step.args['name']}"
        run.context.volumes.append(path)
        run.record("t_volume", path=path)
        return {"path": path}

    @plans.register_step(DOMAIN, "t_define")
    def define(step, run):
        run.record("t_domain", uuid=step.args["uuid"])
        if run.context.fail_at == "define":
            raise RuntimeError("define refused")
        disks = [run.outputs[ref]["path"] for ref in step.args["disks"]]
        run.context.domains.append((step.args["uuid"], disks))
        return {"uuid": step.args["uuid"]}

    @plans.register_undo("t_volume")
    def undo_volume(obj, world):
        world.volumes.remove(obj["path"])
        return obj["path"]

    @plans.register_undo("t_domain")
    def undo_domain(obj, world):
        for d in list(world.domains):
            if d[0] == obj["uuid"]:
                world.domains.remove(d)
                return f"domain {obj['uuid']}"
        return None

    yield
    plans._steps.clear()
    plans._steps.update(saved[0])
    plans._undo.clear()
    plans._undo.update(saved[1])


def _plan() -> Plan:
    plan = Plan(restart=[])
    plan.add(STORAGE, "t_create_volume", id="disk0", name="a.qcow2", describe="Create a")
    plan.add(STORAGE, "t_create_volume", id="disk1", name="b.qcow2")
    plan.add(DOMAIN, "t_define", uuid="u-1", disks=["disk0", "disk1"])
    plan.creates += [{"kind": "t_volume"}, {"kind": "t_volume"}, {"kind": "t_domain"}]
    return plan


def test_a_plan_survives_json_as_the_task_stores_it():
    plan = _plan()
    plan.restart.append("vCPU maximum changes at the next boot")
    data = json.loads(json.dumps(plan.to_dict()))
    again = Plan.from_dict(data)
    assert again == plan
    assert again.steps[0] == Step(
        kind=STORAGE, action="t_create_volume", args={"name": "a.qcow2"}, id="disk0",
        describe="Create a",
    )  # fmt: skip
    assert again.needs_restart and not again.finished


def test_step_kinds_are_the_three_known_ones():
    with pytest.raises(PlanError):
        Step(kind="network", action="x")
    with pytest.raises(PlanError):
        plans.register_step("network", "x", lambda step, run: None)
    Plan().add(HOST, "read_sysfs", path="/sys/kernel/mm/ksm/run")


def test_apply_runs_steps_in_order_saving_each_record(handlers):
    world, saves = _World(), []
    plan = _plan()
    seen = []
    plans.apply(
        plan, world, lambda p: saves.append(json.dumps(p.to_dict())),
        before=lambda step, i: seen.append(("before", i)),
        after=lambda step, i: seen.append(("after", i)),
    )  # fmt: skip
    assert world.domains == [("u-1", ["/pool/a.qcow2", "/pool/b.qcow2"])]
    assert plan.finished and plan.done == 3
    assert plan.outputs["disk1"] == {"path": "/pool/b.qcow2"}
    assert [o["kind"] for o in plan.created] == ["t_volume", "t_volume", "t_domain"]
    assert seen == [("before", 0), ("after", 0), ("before", 1), ("after", 1), ("before", 2),
                    ("after", 2)]  # fmt: skip
    # Saved after each record and each step: the first save already names the first volume.
    assert len(saves) == 6
    assert json.loads(saves[0])["created"] == [{"kind": "t_volume", "path": "/pool/a.qcow2"}]


def test_rollback_undoes_exactly_what_was_recorded_newest_first(handlers):
    world = _World(fail_at="b.qcow2")
    plan = _plan()
    world.volumes.append("/pool/someone-elses.qcow2")
    with pytest.raises(RuntimeError, match="no room"):
        plans.apply(plan, world, lambda p: None)
    assert plan.done == 1
    assert plans.rollback(plan, world) == ["/pool/a.qcow2"]
    assert world.volumes == ["/pool/someone-elses.qcow2"]


def test_rollback_after_a_step_recorded_before_its_call(handlers):
    world = _World(fail_at="define")
    plan = _plan()
    with pytest.raises(RuntimeError, match="define refused"):
        plans.apply(plan, world, lambda p: None)
    # The domain was recorded before the call failed: its undo finds nothing and says so.
    assert plans.rollback(plan, world) == ["/pool/b.qcow2", "/pool/a.qcow2"]
    assert world.volumes == [] and world.domains == []


def test_recovery_rolls_back_from_the_stored_plan(handlers):
    world, stored = _World(), {}
    plan = _plan()
    plans.apply(plan, world, lambda p: stored.update(plan=p.to_dict()))
    recovered = Plan.from_dict(json.loads(json.dumps(stored["plan"])))
    assert plans.rollback(recovered, world) == [
        "domain u-1",
        "/pool/b.qcow2",
        "/pool/a.qcow2",
    ]
    assert world.volumes == [] and world.domains == []


def test_apply_resumes_after_the_steps_done(handlers):
    world = _World()
    plan = _plan()
    plan.done = 1  # the first volume was made by an earlier run
    plan.outputs["disk0"] = {"path": "/pool/made-earlier.qcow2"}
    plans.apply(plan, world, lambda p: None)
    assert world.volumes == ["/pool/b.qcow2"]
    assert world.domains == [("u-1", ["/pool/made-earlier.qcow2", "/pool/b.qcow2"])]


def test_unknown_steps_and_undo_kinds_are_errors(handlers):
    plan = Plan()
    plan.add(DOMAIN, "no_such_action")
    with pytest.raises(PlanError, match="No handler"):
        plans.apply(plan, _World(), lambda p: None)
    with pytest.raises(PlanError, match="No undo"):
        plans.rollback(Plan(created=[{"kind": "mystery"}]), _World())


def test_a_failing_undo_is_reported_and_the_rest_still_undone(handlers):
    world = _World()
    plan = _plan()
    plans.apply(plan, world, lambda p: None)
    world.volumes.remove("/pool/b.qcow2")  # gone meanwhile: its undo raises
    errors = []
    removed = plans.rollback(plan, world, on_error=lambda obj, exc: errors.append(obj["path"]))
    assert removed == ["domain u-1", "/pool/a.qcow2"] and errors == ["/pool/b.qcow2"]
