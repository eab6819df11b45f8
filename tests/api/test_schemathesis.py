"""Schemathesis over the whole OpenAPI schema, as a platform admin, a tenant operator and a
tenant viewer (API tokens), in-process against the WSGI app on a simulated test-driver host.

Asserts zero server errors and zero response-schema violations. Every example runs in a
savepoint rolled back after its request, so each one meets the same world (a delete or a
revoked token does not starve the operations after it) and nothing reaches a host: tasks are
queued in the never-committed transaction and never run.

The bounded run (a few examples per operation) is part of the normal suite; ``make fuzz`` runs
the same test with many more examples (``PADDOCK_FUZZ_EXAMPLES``) plus Schemathesis' stateful
run over the schema's links (``PADDOCK_FUZZ_STATEFUL=1``) for a release.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import pytest
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from panel.models import ApiToken, Tenant
from tests.conftest import grant_host
from vms.models import VirtualMachine

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=False)

EXAMPLES = int(os.environ.get("PADDOCK_FUZZ_EXAMPLES", "10"))
STATEFUL = os.environ.get("PADDOCK_FUZZ_STATEFUL") == "1"
CHECKS = [not_a_server_error, response_schema_conformance]
ROLES = ["admin", "operator", "viewer"]


@dataclass
class Report:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


@pytest.fixture
def wsgi_app():
    """The WSGI app, without closing the test's database connection after each request (as
    Django's test client does)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(synced_host, admin_user, make_member):
    acme = Tenant.objects.create(name="acme")
    globex = Tenant.objects.create(name="globex")
    vms = list(VirtualMachine.objects.filter(host=synced_host).order_by("name"))
    VirtualMachine.objects.filter(pk__in=[v.pk for v in vms[:4]]).update(tenant=acme)
    VirtualMachine.objects.filter(pk__in=[v.pk for v in vms[4:6]]).update(tenant=globex)
    grant_host(acme, synced_host)
    users = {
        "admin": admin_user,
        "operator": make_member(acme, "operator", "acme-operator"),
        "viewer": make_member(acme, "viewer", "acme-viewer"),
    }
    tokens = {role: ApiToken.issue(user=user, name="fuzz")[1] for role, user in users.items()}
    vm = vms[0]
    return {"host": synced_host, "vm": vm, "vms": vms, "tokens": tokens, "acme": acme}


def _real_path_parameters(world) -> dict[str, list]:
    """Ids of objects that exist, so examples reach past the 404 of a random id."""
    vm = world["vm"]
    host = world["host"]
    return {
        "id": sorted(
            {vm.pk, world["vms"][5].pk, host.pk, world["acme"].pk}
            | set(host.pools.values_list("pk", flat=True)[:2])
        ),
        "disk_id": list(vm.disks.values_list("pk", flat=True)) or [1],
        "nic_id": list(vm.nics.values_list("pk", flat=True)) or [1],
        "name": list(vm.snapshots.values_list("name", flat=True)) or ["snap"],
    }


def _strategy(operation, real):
    """Valid and invalid requests (Schemathesis' positive and negative modes), with random ids
    and with ids of objects that exist."""
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    random_cases = [operation.as_strategy(generation_mode=mode) for mode in modes]
    names = {p.name for p in operation.path_parameters}
    if not names:
        return st.one_of(*random_cases)
    fixed = st.fixed_dictionaries({n: st.sampled_from(real.get(n, [1])) for n in sorted(names)})
    real_cases = [
        fixed.flatmap(lambda params, mode=mode: operation.as_strategy(
            generation_mode=mode, path_parameters=params))
        for mode in modes
    ]  # fmt: skip
    return st.one_of(*real_cases, *random_cases)


def _call(case, token, report: Report):
    with transaction.atomic():
        response = case.call(headers={"Authorization": f"Token {token}"})
        transaction.set_rollback(True)
    report.requests += 1
    report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
    try:
        case.validate_response(response, checks=CHECKS)
    except (Exception, BaseExceptionGroup) as exc:  # keep going, report every failure at the end
        report.failures.append(f"{case.method} {case.formatted_path} -> {exc}"[:2000])


def _run_operation(operation, strategy, token, report: Report) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case):
        _call(case, token, report)

    run()


@pytest.mark.parametrize("role", ROLES)
def test_schemathesis_no_server_errors_or_schema_violations(wsgi_app, fuzz_world, role):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app)
    token = fuzz_world["tokens"][role]
    real = _real_path_parameters(fuzz_world)
    report = Report()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        _run_operation(operation, _strategy(operation, real), token, report)
    if STATEFUL:
        before = report.requests
        _run_stateful(schema, token, report)
        print(f"\nschemathesis {role} stateful: {report.requests - before} requests")
    elapsed = time.monotonic() - started
    print(f"\nschemathesis {role}: {report.requests} requests in {elapsed:.0f}s, "
          f"{len(report.failures)} failures, statuses {dict(sorted(report.statuses.items()))}")  # fmt: skip
    assert report.requests > 0
    assert not report.failures, "\n".join(report.failures[:20])


def _run_stateful(schema, token, report: Report) -> None:
    """Schemathesis' state machine over the links it infers between operations. The one
    exclusion: revoking the fuzzer's own token (a revoked token turns every later step into an
    uninformative 401); revocation is covered by the stateless run and tests/api."""
    stateful = schema.exclude(path_regex=r"^/api/tokens/\{id\}/$", method="DELETE")
    machine = stateful.as_state_machine()

    class Machine(machine):
        # One scenario, one savepoint: its steps build on each other, the next starts afresh.
        def setup(self):
            super().setup()
            self._savepoint = transaction.atomic()
            self._savepoint.__enter__()

        def teardown(self):
            transaction.set_rollback(True)
            self._savepoint.__exit__(None, None, None)
            super().teardown()

        def get_call_kwargs(self, case):
            return {"headers": {"Authorization": f"Token {token}"}}

        def validate_response(self, response, case, **kwargs):
            report.requests += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as exc:
                report.failures.append(f"stateful {case.method} {case.formatted_path} -> {exc}")

    Machine.run(
        settings=settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            stateful_step_count=6,
        )
    )
