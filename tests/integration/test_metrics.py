"""Metrics end to end: the collector on the real libvirtd (one bulk call per round), the
simulator on a test-driver host, the history API with its tenancy, /metrics, the alert rules."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import libvirt
import pytest

from metrics import collector
from metrics.store import reset_store
from panel.choices import Role
from tests.conftest import run_queued_tasks
from vms.models import VirtualMachine

from .guests import cleanup, define

pytestmark = [pytest.mark.django_db]

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "paddock-alerts.yml"


@pytest.fixture(autouse=True)
def _fresh_store():
    reset_store()
    collector._previous.clear()
    yield
    reset_store()
    collector._previous.clear()


class CountingConnection:
    """A libvirt connection that counts the calls made through it."""

    def __init__(self, conn):
        self._conn = conn
        self.calls: dict[str, int] = {}

    def __getattr__(self, name):
        attr = getattr(self._conn, name)
        if not callable(attr):
            return attr

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted


def parse_prometheus(text: str) -> list[tuple[str, dict, float]]:
    """``name{labels} value`` lines of the text exposition format (no timestamps)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = {}
        rest = rest.rstrip("}")
        while rest:
            key, _, rest = rest.partition('="')
            val, i = [], 0
            while rest[i] != '"':
                if rest[i] == "\\":
                    i += 1
                    val.append({"n": "\n"}.get(rest[i], rest[i]))
                else:
                    val.append(rest[i])
                i += 1
            labels[key] = "".join(val)
            rest = rest[i + 1 :].lstrip(",")
        assert name.replace("_", "").isalnum(), line
        samples.append((name, labels, float(value)))
    return samples


# --- the real libvirtd ------------------------------------------------------------------------


@pytest.fixture
def qemu_domains():
    conn = libvirt.open("qemu:///system")
    prefix = f"paddocktest-metrics-{uuid.uuid4().hex[:6]}-"
    doms = [define(conn, f"{prefix}{i}", start=True) for i in range(3)]
    yield conn, prefix, doms
    cleanup(conn, prefix)
    conn.close()


@pytest.mark.integration
def test_real_host_one_bulk_call_per_round_api_tenancy_and_prometheus(
    api, admin_user, tenant, other_tenant, make_member, qemu_domains
):
    conn, prefix, _doms = qemu_domains
    client = api.as_user(admin_user)
    response = client.post("/api/hosts/", {"name": "local", "uri": "qemu:///system"}, format="json")
    assert response.status_code == 201, response.content
    host_id = response.json()["id"]
    run_queued_tasks()
    from hosts.models import Host

    host = Host.objects.get(pk=host_id)
    for _ in range(3):  # other runs on this libvirtd may remove a pool mid-sync: sync again
        if host.status == "online" and host.vms.filter(name__startswith=prefix).count() == 3:
            break
        client.post(f"/api/hosts/{host_id}/sync/")
        run_queued_tasks()
        host.refresh_from_db()
    assert host.status == "online", host.last_error
    ours = {vm.name: vm for vm in VirtualMachine.objects.filter(host=host, name__startswith=prefix)}
    assert len(ours) == 3
    mine, theirs = ours[f"{prefix}0"], ours[f"{prefix}1"]
    VirtualMachine.objects.filter(pk=mine.pk).update(tenant=tenant)
    VirtualMachine.objects.filter(pk=theirs.pk).update(tenant=other_tenant)

    counting = CountingConnection(conn)
    rounds = []
    for i in range(2):
        if i:
            time.sleep(2.0)
        rounds.append(collector.collect_host(host, conn=counting))
        # Exactly one bulk stats call per host per round, never a call per domain.
        assert counting.calls.get("getAllDomainStats") == i + 1
        assert "lookupByUUIDString" not in counting.calls
        assert "listAllDomains" not in counting.calls
    assert counting.calls.get("getCPUStats") == 2
    assert counting.calls.get("getMemoryStats") == 2

    second = rounds[1]
    assert second.simulated is False
    for vm in ours.values():
        values = second.vms[vm.pk]
        assert values["cpu_percent"] is not None and 0 <= values["cpu_percent"] <= 100
        assert values["vcpu_delay_percent"] is not None and values["vcpu_delay_percent"] >= 0
        assert values["memory_balloon_bytes"] is None or values["memory_balloon_bytes"] > 0
    # The first round had no previous sample: gauges only.
    assert rounds[0].vms[mine.pk]["cpu_percent"] is None
    assert second.host["cpu_percent"] is not None
    assert second.host["memory_total_bytes"] > 0
    assert second.host["load1"] is not None  # this machine: /proc/loadavg
    assert second.host["vms_running"] >= 3

    # The API returns the series after two rounds.
    body = client.get(f"/api/vms/{mine.pk}/metrics/?range=hour").json()
    assert body["simulated"] is False and body["range"] == "hour" and body["step"] == 10
    assert body["series"]["cpu_percent"], body
    assert body["current"]["values"]["cpu_percent"] is not None
    assert client.get(f"/api/vms/{mine.pk}/metrics/?range=year").json()["step"] == 86400
    assert client.get(f"/api/vms/{mine.pk}/metrics/?range=ages").status_code == 400
    host_body = client.get(f"/api/hosts/{host.pk}/metrics/?range=day").json()
    assert host_body["series"]["cpu_percent"] and host_body["simulated"] is False

    # Tenancy: a tenant sees its own VM's metrics, not another tenant's (404), no hosts.
    viewer = api.as_user(make_member(tenant, Role.VIEWER))
    assert viewer.get(f"/api/vms/{mine.pk}/metrics/").status_code == 200
    assert viewer.get(f"/api/vms/{theirs.pk}/metrics/").status_code == 404
    assert viewer.get(f"/api/vms/{ours[f'{prefix}2'].pk}/metrics/").status_code == 404
    assert viewer.get(f"/api/hosts/{host.pk}/metrics/").status_code == 403

    # /metrics: Prometheus text with the VMs, with the scrape token.
    from django.conf import settings
    from django.test import Client, override_settings

    with override_settings(PADDOCK={**settings.PADDOCK, "METRICS_TOKEN": "scrape-secret"}):
        text = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")
    assert text.status_code == 200
    assert text["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(text.content.decode())
    cpu = {s[1]["uuid"]: s for s in samples if s[0] == "paddock_vm_cpu_percent"}
    for vm in ours.values():
        assert str(vm.uuid) in cpu
        assert cpu[str(vm.uuid)][1]["host"] == "local"
        assert cpu[str(vm.uuid)][1]["vm"] == vm.name
    assert cpu[str(mine.uuid)][1]["tenant"] == tenant.name
    assert any(s[0] == "paddock_host_load1" for s in samples)
    assert any(s[0] == "paddock_vm_vcpu_delay_percent" for s in samples)


# --- a test-driver host: the simulator ------------------------------------------------------


def test_simulated_host_metrics_through_the_api(api, admin_user, synced_host, tenant, make_member):
    running = VirtualMachine.objects.filter(host=synced_host, state="running")
    vm = running.first()
    VirtualMachine.objects.filter(pk=vm.pk).update(tenant=tenant)
    now = time.time()
    collector.collect_host(synced_host, now=now - 10)
    rnd = collector.collect_host(synced_host, now=now)
    assert rnd.simulated and rnd.bulk_calls == 0
    assert set(rnd.vms) == set(running.values_list("pk", flat=True))
    assert rnd.pools

    viewer = api.as_user(make_member(tenant, Role.VIEWER))
    body = viewer.get(f"/api/vms/{vm.pk}/metrics/?range=hour").json()
    assert body["simulated"] is True
    assert len(body["series"]["cpu_percent"]) == 2
    assert set(body["series"]) >= {"cpu_percent", "vcpu_delay_percent", "net_rx_bps"}
    other = running.exclude(pk=vm.pk).first()
    assert viewer.get(f"/api/vms/{other.pk}/metrics/").status_code == 404

    admin = api.as_user(admin_user)
    host_body = admin.get(f"/api/hosts/{synced_host.pk}/metrics/").json()
    assert host_body["simulated"] is True and host_body["current"]["values"]["vms_running"] > 0
    pool = synced_host.pools.first()
    pool_body = admin.get(f"/api/storage-pools/{pool.pk}/metrics/?range=month").json()
    assert pool_body["step"] == 3600 and "max" in pool_body
    assert pool_body["series"]["used_percent"]


def test_prometheus_endpoint_access(api, admin_user, synced_host, tenant, make_member):
    from django.test import Client

    from panel.models import ApiToken

    collector.collect_host(synced_host)
    remote = Client(REMOTE_ADDR="192.0.2.7")
    assert remote.get("/metrics").status_code == 401
    admin_token = ApiToken.issue(user=admin_user, name="prom")[1]
    member_token = ApiToken.issue(user=make_member(tenant, Role.ADMIN), name="prom")[1]
    ok = remote.get("/metrics", HTTP_AUTHORIZATION=f"Token {admin_token}")
    assert ok.status_code == 200
    samples = parse_prometheus(ok.content.decode())
    assert {s[1]["simulated"] for s in samples} == {"true"}
    assert {s[0] for s in samples} >= {
        "paddock_vm_cpu_percent",
        "paddock_host_cpu_percent",
        "paddock_pool_used_percent",
    }
    assert remote.get("/metrics", HTTP_AUTHORIZATION=f"Token {member_token}").status_code == 403
    assert remote.get("/metrics", HTTP_AUTHORIZATION="Token nope").status_code == 401


# --- the alert rules --------------------------------------------------------------------------


PROMTOOL_TEST = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'paddock_vm_cpu_percent{{vm="busy",uuid="u1",host="h",tenant="t"}}'
        values: '95x10'
      - series: 'paddock_vm_vcpu_delay_percent{{vm="busy",uuid="u1",host="h",tenant="t"}}'
        values: '8x15'
      - series: 'paddock_pool_used_percent{{pool="p",host="h"}}'
        values: '90x15'
      - series: 'paddock_host_cpu_percent{{host="h"}}'
        values: '10x15'
    alert_rule_test:
      - eval_time: 7m
        alertname: PaddockVMCPUHigh
        exp_alerts:
          - exp_labels: {{severity: warning, vm: busy, uuid: u1, host: h, tenant: t}}
            exp_annotations:
              summary: "VM busy on h uses over 90 % of its vCPUs"
              description: "busy (tenant t, u1) has used 95 % of its vCPUs for 5 minutes."
      - eval_time: 12m
        alertname: PaddockVCPUDelayHigh
        exp_alerts:
          - exp_labels: {{severity: warning, vm: busy, uuid: u1, host: h, tenant: t}}
            exp_annotations:
              summary: "VM busy waits for a host CPU (vCPU delay over 5 %)"
              description: "The vCPUs of busy on h spent 8.0 % of the time runnable but not
                running (steal): the host is overcommitted or the VM's pinning shares CPUs
                with busy neighbours."
      - eval_time: 12m
        alertname: PaddockStoragePoolFull
        exp_alerts:
          - exp_labels: {{severity: warning, pool: p, host: h}}
            exp_annotations:
              summary: "Storage pool p on h is over 85 % full"
              description: "p on h is 90 % allocated."
      - eval_time: 12m
        alertname: PaddockHostMetricsMissing
        exp_alerts: []
"""


@pytest.mark.integration
def test_alert_rules_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is missing: install the Debian package 'prometheus' "
            "(apt-get install --no-install-recommends prometheus)."
        )
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    shutil.copy(RULES, tmp_path / "rules.yml")
    (tmp_path / "test.yml").write_text(PROMTOOL_TEST.format(rules="rules.yml"))
    run = subprocess.run(
        [promtool, "test", "rules", "test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
