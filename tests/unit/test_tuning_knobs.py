"""tuning.knobs.clean: defaults filled in, unknown knobs and impossible combinations refused
with ValidationError keyed by the dotted knob name; the built-in profiles are clean."""

from __future__ import annotations

import copy

import pytest
from django.core.exceptions import ValidationError

from tuning.compiler import NoFit, compile
from tuning.knobs import (
    CACHE_MODES,
    DEFAULTS,
    DISCARD,
    EMULATOR,
    HUGEPAGES,
    IO_MODES,
    NUMA_MODES,
    PLACEMENTS,
    THP_MODES,
    THROTTLE_KEYS,
    clean,
)
from tuning.profiles import BUILTINS
from tuning.topology import CpuInfo, HostTopology, LedgerView, NodeInfo, VmFacts

NO_BALLOON = {"enabled": False, "period": 0, "autodeflate": False}


def with_(**groups) -> dict:
    """DEFAULTS with some knobs of some groups replaced (not cleaned)."""
    k = copy.deepcopy(DEFAULTS)
    for group, values in groups.items():
        k[group].update(values)
    return k


def refused(knobs) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as exc:
        clean(knobs)
    return exc.value.message_dict


# --- defaults and unknown knobs -------------------------------------------------------------


@pytest.mark.parametrize("given", [None, {}, {"cpu": {}}, {"memory": {"balloon": {}}}])
def test_missing_knobs_take_their_defaults(given):
    assert clean(given) == DEFAULTS


def test_clean_does_not_change_its_input():
    given = {"cpu": {"placement": "dedicated"}, "disk": {"throttle": {"total_iops_sec": 10}}}
    before = copy.deepcopy(given)
    out = clean(given)
    assert given == before
    assert out["cpu"]["placement"] == "dedicated"
    assert out["disk"]["throttle"]["total_iops_sec"] == 10
    assert out["disk"]["throttle"]["read_iops_sec"] == 0


@pytest.mark.parametrize(
    ("knobs", "field"),
    [
        ({"gpu": {"passthrough": True}}, "gpu"),
        ({"cpu": {"pinning": "all"}}, "cpu.pinning"),
        ({"memory": {"balloon": {"deflate": True}}}, "memory.balloon.deflate"),
        ({"disk": {"throttle": {"total_bytes_per_sec": 1}}}, "disk.throttle.total_bytes_per_sec"),
        ({"host": {"irq_affinity": False, "nohz_full": True}}, "host.nohz_full"),
    ],
)
def test_an_unknown_knob_is_refused_by_its_dotted_name(knobs, field):
    errors = refused(knobs)
    assert list(errors) == [field]
    assert errors[field] == [f"Unknown knob {field!r}."]


@pytest.mark.parametrize(
    ("knobs", "field"),
    [
        (["cpu"], "knobs"),
        ({"cpu": "dedicated"}, "cpu"),
        ({"memory": {"balloon": True}}, "memory.balloon"),
    ],
)
def test_a_group_that_is_not_an_object_is_refused(knobs, field):
    assert field in refused(knobs)


def test_unknown_topology_keys_are_refused():
    errors = refused({"cpu": {"topology": {"sockets": 1, "cores": 2, "threads": 1, "nodes": 2}}})
    assert errors["cpu.topology"] == ["Unknown topology keys: nodes."]


# --- every allowed value is accepted; anything else is refused by name ---------------------


def _compatible(group: str, key: str, value) -> dict:
    """Knobs where ``group.key = value`` is the only change, plus what it needs to be valid."""
    k = with_(**{group: {key: value}})
    if group == "memory" and key == "hugepages" and value != "none":
        k["memory"]["balloon"] = dict(NO_BALLOON)
    if group == "disk" and key == "io" and value == "native":
        k["disk"]["cache"] = "none"
    if group == "host" and key == "irq_affinity" and value:
        k["cpu"]["placement"] = "dedicated"
    return k


ENUMS = (
    [("cpu", "placement", v) for v in PLACEMENTS]
    + [("cpu", "emulator", v) for v in EMULATOR]
    + [("cpu", "iothread_pin", v) for v in ("shared", "dedicated")]
    + [("cpu", "topology", v) for v in ("default", "auto")]
    + [("cpu", "model", v) for v in ("default", "host-passthrough", "host-model", "EPYC-v4")]
    + [("numa", "mode", v) for v in NUMA_MODES]
    + [("memory", "hugepages", v) for v in HUGEPAGES]
    + [("disk", "cache", v) for v in CACHE_MODES]
    + [("disk", "io", v) for v in IO_MODES]
    + [("disk", "discard", v) for v in DISCARD]
    + [("disk", "queues", v) for v in ("default", "vcpus", 1, 64)]
    + [("network", "queues", v) for v in ("default", "vcpus", 1, 256)]
    + [("network", "rx_queue_size", v) for v in (None, 256, 512, 1024)]
    + [("network", "tx_queue_size", v) for v in (None, 256, 512, 1024)]
    + [("host", "thp", v) for v in (None, *THP_MODES)]
    + [("host", "ksm", v) for v in (None, True, False)]
    + [("host", "irq_affinity", v) for v in (True, False)]
)


@pytest.mark.parametrize(("group", "key", "value"), ENUMS)
def test_each_allowed_value_is_accepted(group, key, value):
    out = clean(_compatible(group, key, value))
    assert out[group][key] == value


@pytest.mark.parametrize(
    ("group", "key", "value"),
    [
        ("cpu", "placement", "pinned"),
        ("cpu", "emulator", "dedicated"),
        ("cpu", "iothread_pin", "isolate"),
        ("cpu", "iothreads", 9),
        ("cpu", "iothreads", True),
        ("cpu", "topology", "host"),
        ("cpu", "model", "Sky lake"),
        ("cpu", "model", ""),
        ("cpu", "shares", 1),
        ("cpu", "period", 999),
        ("numa", "mode", "auto"),
        ("memory", "hugepages", "4K"),
        ("memory", "locked", "yes"),
        ("memory", "hard_limit_mib", 63),
        ("disk", "cache", "writearound"),
        ("disk", "io", "aio"),
        ("disk", "discard", "trim"),
        ("disk", "queues", 0),
        ("disk", "queues", 65),
        ("disk", "iothread", None),
        ("network", "queues", 257),
        ("network", "rx_queue_size", 128),
        ("network", "rx_queue_size", 256.0),  # a JSON float would be written as "256.0"
        ("network", "tx_queue_size", True),
        ("host", "thp", "sometimes"),
        ("host", "ksm", "on"),
        ("host", "halt_poll_ns", -1),
    ],
)
def test_a_bad_value_is_refused_by_its_dotted_name(group, key, value):
    assert f"{group}.{key}" in refused(with_(**{group: {key: value}}))


@pytest.mark.parametrize("part", ["sockets", "cores", "threads"])
def test_a_bad_topology_part_is_refused_by_its_dotted_name(part):
    topo = {"sockets": 1, "cores": 2, "threads": 1}
    topo[part] = 0
    assert f"cpu.topology.{part}" in refused({"cpu": {"topology": topo}})


def test_an_explicit_topology_is_kept_as_given():
    topo = {"sockets": 2, "dies": 1, "cores": 2, "threads": 2}
    assert clean({"cpu": {"topology": topo}})["cpu"]["topology"] == topo


# --- combinations ---------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["writeback", "writethrough", "unsafe"])
def test_io_native_needs_an_o_direct_cache_mode(cache):
    errors = refused(with_(disk={"io": "native", "cache": cache}))
    assert list(errors) == ["disk.io"]
    assert f"cache is {cache}" in errors["disk.io"][0]


@pytest.mark.parametrize("cache", ["default", "none", "directsync"])
def test_io_native_with_an_o_direct_cache_is_fine(cache):
    assert clean(with_(disk={"io": "native", "cache": cache}))["disk"]["io"] == "native"


@pytest.mark.parametrize(
    ("knobs", "field"),
    [
        (with_(cpu={"quota": 50000}), "cpu.quota"),
        (with_(cpu={"placement": "dedicated", "period": 100000, "quota": 50000}), "cpu.quota"),
        (with_(cpu={"placement": "dedicated"}, numa={"mode": "interleave"}), "numa.mode"),
        (with_(memory={"hugepages": "2M"}), "memory.balloon.enabled"),
        (
            with_(memory={"balloon": {"enabled": False, "period": 10, "autodeflate": False}}),
            "memory.balloon",
        ),
        (with_(memory={"hard_limit_mib": 1024, "soft_limit_mib": 2048}), "memory.soft_limit_mib"),
        (with_(disk={"iothread": True}), "disk.iothread"),
        (with_(host={"irq_affinity": True}), "host.irq_affinity"),
    ],
)
def test_impossible_combinations_are_refused_by_name(knobs, field):
    assert field in refused(knobs)


def _throttle(**values) -> dict:
    return {"disk": {"throttle": {**{k: 0 for k in THROTTLE_KEYS}, **values}}}


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"total_bytes_sec": 100, "read_bytes_sec": 50}, "disk.throttle.total_bytes_sec"),
        ({"total_iops_sec": 100, "write_iops_sec": 50}, "disk.throttle.total_iops_sec"),
        ({"read_iops_sec_max": 100}, "disk.throttle.read_iops_sec_max"),
        ({"read_iops_sec": 100, "read_iops_sec_max": 50}, "disk.throttle.read_iops_sec_max"),
        (
            {"total_bytes_sec": 9, "total_bytes_sec_max_length": 5},
            "disk.throttle.total_bytes_sec_max_length",
        ),
        ({"write_bytes_sec": -1}, "disk.throttle.write_bytes_sec"),
    ],
)
def test_throttle_combinations_are_refused_by_name(values, field):
    assert field in refused(_throttle(**values))


def test_a_burst_above_its_base_is_fine():
    out = clean(_throttle(read_iops_sec=100, read_iops_sec_max=500, read_iops_sec_max_length=10))
    assert out["disk"]["throttle"]["read_iops_sec_max"] == 500


def test_every_bad_knob_is_reported_at_once():
    errors = refused(with_(cpu={"placement": "x", "emulator": "y"}, disk={"io": "z"}))
    assert {"cpu.placement", "cpu.emulator", "disk.io"} <= set(errors)


# --- hugepages larger than the guest: checked at compile time, where the VM is known --------


@pytest.mark.parametrize(("size", "memory_mib"), [("1G", 512), ("2M", 1)])
def test_pages_larger_than_guest_memory_pass_clean_but_not_compile(size, memory_mib):
    knobs = clean(with_(memory={"hugepages": size, "balloon": dict(NO_BALLOON)}))
    node = NodeInfo(id=0, cpus=[CpuInfo(0, 0, 0, (0,)), CpuInfo(1, 1, 0, (1,))],
                    memory_mib=8192, hugepages={1048576: {"total": 4, "free": 4}})  # fmt: skip
    host = HostTopology(host_id=1, name="kvm1", nodes=[node], housekeeping=frozenset({0}))
    facts = VmFacts(vm_id=1, name="tiny", vcpus=1, memory_mib=memory_mib)
    with pytest.raises(NoFit) as exc:
        compile(knobs, facts, host, LedgerView())
    assert exc.value.reasons[0].startswith(
        f"memory.hugepages: {memory_mib} MiB of guest memory is not a whole number of {size} pages"
    )


# --- idempotence and the built-in profiles --------------------------------------------------

SAMPLES = [
    {},
    {"cpu": {"placement": "dedicated-isolate-siblings", "emulator": "isolate",
             "topology": {"sockets": 1, "cores": 4, "threads": 2}}},
    {"cpu": {"shares": 512, "period": 100000, "quota": 50000}, "numa": {"mode": "interleave"}},
    {"memory": {"hugepages": "1G", "locked": True, "balloon": NO_BALLOON,
                "hard_limit_mib": 4096, "soft_limit_mib": 2048}},
    {"disk": {"cache": "writeback", "io": "io_uring", "queues": 4,
              "throttle": {"total_iops_sec": 1000, "total_iops_sec_max": 2000}},
     "network": {"queues": "vcpus", "rx_queue_size": 512}},
]  # fmt: skip


@pytest.mark.parametrize("given", SAMPLES + list(BUILTINS.values()))
def test_clean_is_idempotent(given):
    once = clean(given)
    assert clean(once) == once
    assert clean(copy.deepcopy(once)) == once


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_profiles_are_clean(name):
    knobs = BUILTINS[name]
    assert clean(knobs) == knobs
    assert set(knobs) == set(DEFAULTS)
    for group, defaults in DEFAULTS.items():
        assert set(knobs[group]) == set(defaults), group


def test_builtins_are_the_documented_profiles():
    assert set(BUILTINS) == {"balanced", "latency-critical", "throughput", "dense"}
    assert BUILTINS["balanced"] == DEFAULTS
    latency = BUILTINS["latency-critical"]
    assert latency["cpu"]["placement"] == "dedicated-isolate-siblings"
    assert latency["cpu"]["emulator"] == "isolate"
    assert latency["memory"]["hugepages"] == "2M"
    assert latency["memory"]["balloon"]["enabled"] is False
    assert BUILTINS["throughput"]["disk"]["iothread"] is True
    assert BUILTINS["dense"]["host"]["ksm"] is True
