"""Adding a host never makes libvirt read an arbitrary file, and URIs are unique as hosts."""

from __future__ import annotations

import pytest
from django.test import override_settings

from hosts import services
from hosts.driver.connection import InvalidURI, clean_error_text, parse_uri
from hosts.models import Host
from panel.models import Task
from tests.conftest import run_queued_tasks

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path", ["/etc/shadow", "/proc/self/environ", "/etc/passwd", "/var/lib/x/../../etc/shadow"]
)
def test_test_driver_uri_outside_node_folders_is_refused(api, admin_user, path):
    client = api.as_user(admin_user)
    response = client.post("/api/hosts/", {"name": "evil", "uri": f"test://{path}"}, format="json")
    assert response.status_code == 400
    assert "uri" in response.json()
    assert not Host.objects.exists() and not Task.objects.exists()


def test_secret_key_file_in_data_dir_cannot_become_a_node(api, admin_user, settings, tmp_path):
    """The data folder holds the generated SECRET_KEY: it is not a node folder."""
    with override_settings(PADDOCK={**settings.PADDOCK, "TEST_NODE_DIRS": [str(tmp_path / "n")]}):
        secret = tmp_path / "secret_key"
        secret.write_text("super-secret-value\n")
        client = api.as_user(admin_user)
        uri = f"test://{secret}"
        response = client.post("/api/hosts/", {"name": "evil", "uri": uri}, format="json")
        assert response.status_code == 400
        assert "super-secret" not in response.content.decode()


def test_symlink_out_of_node_folder_is_refused(settings, tmp_path):
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    (nodes / "shadow.xml").symlink_to("/etc/shadow")
    with override_settings(PADDOCK={**settings.PADDOCK, "TEST_NODE_DIRS": [str(nodes)]}):
        with pytest.raises(InvalidURI):
            parse_uri(f"test://{nodes / 'shadow.xml'}")


def test_libvirt_error_never_stores_file_contents(api, admin_user, tmp_path):
    """A node file in an allowed folder that is not XML: the error names it, not its lines."""
    bogus = tmp_path / "not-xml.xml"
    bogus.write_text("root:$y$j9T$SECRETHASH:19000:0:99999:7:::\nsecond line\n")
    client = api.as_user(admin_user)
    response = client.post(
        "/api/hosts/", {"name": "bogus", "uri": f"test://{bogus}"}, format="json"
    )
    # The connection is tried first: refused, in libvirt's words without the file's lines.
    assert response.status_code == 400
    refused = " ".join(response.json()["uri"])
    assert "Start tag expected" in refused and "SECRETHASH" not in refused
    assert not Host.objects.filter(name="bogus").exists()
    response = client.post(
        "/api/hosts/",
        {"name": "bogus", "uri": f"test://{bogus}", "offline": True},
        format="json",
    )
    assert response.status_code == 201
    run_queued_tasks()
    host = Host.objects.get(name="bogus")
    task = Task.objects.get(host=host)
    assert host.status == "error" and task.state == "failed"
    for text in (host.last_error, task.error, *task.log_entries.values_list("message", flat=True)):
        assert "SECRETHASH" not in text and "root:" not in text
    assert "Start tag expected" in host.last_error


def test_clean_error_text_drops_the_quoted_line():
    raw = "/etc/shadow:1: Start tag expected, '<' not found\nroot:$y$abc:1::\n^"
    assert clean_error_text(raw) == "/etc/shadow:1: Start tag expected, '<' not found"
    assert clean_error_text("Domain not found: no domain with name 'x'") == (
        "Domain not found: no domain with name 'x'"
    )


@pytest.mark.parametrize("variant", ["QEMU:///system", "Qemu:///system", "qemu:///system"])
def test_uri_case_variants_are_one_host(admin_user, variant, monkeypatch):
    Host.objects.create(name="local", uri="qemu:///system")
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as exc:
        services.host_create(user=admin_user, name="again", uri=variant)
    assert "uri" in exc.value.message_dict
