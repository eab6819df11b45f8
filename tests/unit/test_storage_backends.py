"""Storage backends (the rules of each pool type) and the driver's volume lookups by pool + name."""

from __future__ import annotations

import libvirt
import pytest

from hosts import storage
from hosts.driver import storage as driver_storage
from hosts.storage import backend_for
from hosts.testnode import write_node


def test_file_and_logical_pools_declare_their_rules():
    for pool_type in ("dir", "fs", "netfs"):
        backend = backend_for(pool_type)
        assert backend.formats == ("qcow2", "raw") and backend.linked_clones
        assert backend.names_format and backend.libvirt_format("qcow2") == "qcow2"
    lvm = backend_for("logical")
    assert lvm.formats == ("raw",) and not lvm.linked_clones and lvm.reserves_full_size
    assert lvm.disk_source == "block" and lvm.libvirt_format("raw") == ""
    assert backend_for("dir").unsupported_format("vmdk") == (
        "Unsupported volume format 'vmdk': use raw or qcow2."
    )


def test_an_unmanaged_pool_type_is_named_in_its_message():
    problem = backend_for("rbd").format_problem(None, "ceph0")
    assert problem.startswith("Pool ceph0 is a rbd pool; Paddock manages volumes in ")
    assert "other" not in problem
    assert not backend_for("iscsi").manages_volumes
    assert backend_for("").label == "unknown"


def test_the_package_answers_for_the_driver_side():
    assert storage.create_volume is driver_storage.create_volume
    assert storage.StorageError is driver_storage.StorageError
    assert issubclass(storage.InsufficientSpace, storage.StorageError)
    assert storage.MAX_CHAIN_DEPTH == driver_storage.MAX_CHAIN_DEPTH
    with pytest.raises(AttributeError):
        storage.no_such_name  # noqa: B018


@pytest.fixture
def node_conn(tmp_path):
    conn = libvirt.open(write_node(tmp_path / "node.xml"))
    yield conn
    conn.close()


def test_volumes_are_looked_up_by_pool_and_name(node_conn):
    info = storage.lookup_volume(node_conn, "isos", "debian-12.iso")
    assert info["name"] == "debian-12.iso" and info["key"] == "isos/debian-12.iso"
    assert storage.volume_key_of(node_conn, info["path"]) == "isos/debian-12.iso"
    assert storage.volume_exists(node_conn, "vg0", "scratch")
    assert not storage.volume_exists(node_conn, "vg0", "nothing-here")
    assert storage.lookup_volume(node_conn, "vg0", "nothing-here", missing_ok=True) is None
    with pytest.raises(storage.StorageError, match="There is no volume nothing-here in pool vg0"):
        storage.lookup_volume(node_conn, "vg0", "nothing-here")
    with pytest.raises(storage.StorageError, match="Pool nowhere does not exist"):
        storage.lookup_volume(node_conn, "nowhere", "x")
    assert storage.refresh_pool(node_conn, "isos") in (True, False)
