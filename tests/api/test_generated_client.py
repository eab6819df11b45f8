"""A client generated from the OpenAPI schema works: every module imports, and it drives a VM's
lifecycle (create, start, stop, delete) on the simulated host.

The schema is what ``manage.py spectacular`` serves; the client is generated with
``openapi-python-client`` (pinned in requirements.txt) into a temporary folder and talks to the
application in-process (httpx over Django's test client), so the test sees exactly what a script would.
A body type the schema advertises but the client cannot build (form and multipart beside JSON
on every POST, as DRF's default parsers made it) fails the import step.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.test import Client as DjangoClient
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer

from panel.models import ApiToken
from tests.conftest import run_queued_tasks

pytestmark = pytest.mark.django_db

PACKAGE = "paddock_client"


@pytest.fixture(scope="module")
def client_package(tmp_path_factory) -> str:
    """Generate the client once for the module; returns the folder to put on ``sys.path``."""
    base = tmp_path_factory.mktemp("client")
    schema = SchemaGenerator().get_schema(request=None, public=True)
    (base / "schema.json").write_bytes(OpenApiJsonRenderer().render(schema))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [
            str(bin_dir / "openapi-python-client"),
            "generate",
            "--path",
            str(base / "schema.json"),
            "--output-path",
            str(base / PACKAGE),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=base,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(base))
    yield str(base)
    sys.path.remove(str(base))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


class DjangoTransport(httpx.BaseTransport):
    """httpx over Django's test client: the request runs in this thread, inside the test's
    transaction, through every middleware, as a script's request would."""

    def __init__(self) -> None:
        self.client = DjangoClient()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        path = request.url.raw_path.decode()
        response = self.client.generic(
            request.method,
            path,
            data=request.read(),
            content_type=headers.pop("content-type", ""),
            headers=headers,
        )
        return httpx.Response(
            response.status_code, headers=dict(response.items()), content=response.content
        )


def test_every_generated_module_imports(client_package):
    api = importlib.import_module(f"{PACKAGE}.api")
    modules = [m.name for m in pkgutil.walk_packages(api.__path__, f"{PACKAGE}.api.")]
    assert len(modules) > 60, modules  # every endpoint family is there
    failures = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the point: any failure to import is a broken client
            failures[name] = repr(exc)
    assert not failures, json.dumps(failures, indent=1)


def test_the_generated_client_drives_a_vm_lifecycle(
    client_package, sim_placement, admin_user, tenant
):
    client_mod = importlib.import_module(f"{PACKAGE}.client")
    vms = importlib.import_module(f"{PACKAGE}.api.vms")
    tasks = importlib.import_module(f"{PACKAGE}.api.tasks.tasks_retrieve")
    models = importlib.import_module(f"{PACKAGE}.models")
    _token, secret = ApiToken.issue(user=admin_user, name="generated-client")
    client = client_mod.AuthenticatedClient(
        base_url="http://testserver", token=secret, prefix="Token"
    )
    client.set_httpx_client(
        httpx.Client(
            transport=DjangoTransport(),
            base_url="http://testserver",
            headers={"Authorization": f"Token {secret}"},
        )
    )

    def finished(envelope) -> str:
        run_queued_tasks()
        return tasks.sync(client=client, id=envelope.task.id).state

    create = importlib.import_module(f"{PACKAGE}.api.vms.vms_create")
    body = models.VirtualMachineCreateRequest.from_dict(
        {
            "name": "gen-01",
            "tenant": tenant.pk,
            "host": sim_placement["host"].pk,
            "vcpus": 1,
            "memory_mib": 256,
            "disks": [{"size_gib": 1, "pool": sim_placement["pool"].pk, "format": "qcow2"}],
            "nics": [{"network": sim_placement["net"].pk}],
        }
    )
    response = create.sync_detailed(client=client, body=body)
    assert response.status_code == 202, response.content
    created = response.parsed
    vm_id = created.vm.id
    assert str(finished(created)) == "succeeded"

    start = importlib.import_module(f"{PACKAGE}.api.vms.vms_start_create")
    assert str(finished(start.sync(client=client, id=vm_id))) == "succeeded"
    vm = importlib.import_module(f"{PACKAGE}.api.vms.vms_retrieve").sync(client=client, id=vm_id)
    assert str(vm.state) == "running"

    stop = importlib.import_module(f"{PACKAGE}.api.vms.vms_stop_create")
    assert str(finished(stop.sync(client=client, id=vm_id))) == "succeeded"

    destroy = importlib.import_module(f"{PACKAGE}.api.vms.vms_destroy")
    response = destroy.sync_detailed(client=client, id=vm_id)
    assert response.status_code == 202, response.content
    run_queued_tasks()
    listed = vms.vms_list.sync(client=client, name="gen-01")
    assert [v.name for v in listed.results if not v.gone] == []
