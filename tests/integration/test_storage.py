"""hosts.storage against the real libvirtd (qemu:///system) and, for LVM, the test driver.

Every check reads libvirt's or QEMU's own view (volume XML, ``qemu-img info``, the file's bytes),
not only what the function returned.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import tracemalloc
import uuid
from pathlib import Path
from types import SimpleNamespace

import libvirt
import pytest
from lxml import etree

from hosts import storage
from hosts.driver import storage as driver_storage
from hosts.poolxml import parse_volume
from hosts.storage import InsufficientSpace, StorageError

from .guests import PREFIX, kvm_usable

pytestmark = pytest.mark.integration

IMAGES_DIR = Path("/var/lib/libvirt/images")
KIB = 1024
MIB = 1024**2
GIB = 1024**3
CHUNK = 64 * KIB


# --- fixtures and helpers -----------------------------------------------------------------------


def _pool_xml(name: str, path: Path) -> str:
    pool = etree.Element("pool", type="dir")
    etree.SubElement(pool, "name").text = name
    target = etree.SubElement(pool, "target")
    etree.SubElement(target, "path").text = str(path)
    return etree.tostring(pool, encoding="unicode")


def _remove_pool(pool: libvirt.virStoragePool, directory: Path) -> None:
    try:
        if pool.isActive():
            pool.refresh(0)
            for vol in pool.listAllVolumes(0):
                vol.delete(0)
            pool.destroy()
        pool.undefine()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def qemu():
    conn = libvirt.open("qemu:///system")
    yield conn
    conn.close()


@pytest.fixture
def make_pool(qemu):
    """Dir pools ``paddocktest-pool-<random>`` in fresh directories under the images dir."""
    made = []

    def make() -> SimpleNamespace:
        name = f"paddocktest-pool-{uuid.uuid4().hex[:8]}"
        directory = IMAGES_DIR / name
        directory.mkdir(mode=0o755)
        directory.chmod(0o755)
        pool = qemu.storagePoolDefineXML(_pool_xml(name, directory), 0)
        made.append((pool, directory))
        pool.build(0)
        pool.create(0)
        return SimpleNamespace(name=name, pool=pool, dir=directory, conn=qemu)

    yield make
    for pool, directory in reversed(made):
        _remove_pool(pool, directory)


@pytest.fixture
def dirpool(make_pool):
    return make_pool()


def qemu_img_info(path: str) -> dict:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", path],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(out.stdout)


def libvirt_view(conn: libvirt.virConnect, path: str) -> dict:
    return parse_volume(conn.storageVolLookupByPath(path).XMLDesc(0))


def pool_files(p: SimpleNamespace) -> list[str]:
    return sorted(os.listdir(p.dir))


def pool_volumes(p: SimpleNamespace) -> list[str]:
    p.pool.refresh(0)
    return sorted(p.pool.listVolumes())


def payload_of(size: int, seed: int = 1) -> bytes:
    """Deterministic data (no image format's magic at its start)."""
    return b"\0" + random.Random(seed).randbytes(size - 1)


def chunks(payload: bytes, size: int = CHUNK):
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


def download(conn: libvirt.virConnect, path: str, size: int) -> bytes:
    vol = conn.storageVolLookupByPath(path)
    stream = conn.newStream(0)
    vol.download(stream, 0, size, 0)
    parts = []

    def sink(_stream, data, _opaque):
        parts.append(data)
        return len(data)

    stream.recvAll(sink, None)
    stream.finish()
    return b"".join(parts)


def gib_figures(message: str) -> tuple[float, float]:
    match = re.search(r"requested ([\d.]+) GiB, available ([\d.]+) GiB", message)
    assert match, message
    return float(match.group(1)), float(match.group(2))


# --- names --------------------------------------------------------------------------------------


def test_volume_names_are_deterministic():
    assert storage.volume_name_for("web-01", 0, "qcow2") == "web-01-disk0.qcow2"
    assert storage.volume_name_for("web-01", 1, "raw") == "web-01-disk1.raw"
    assert storage.volume_name_for("db-01", 2, "") == "db-01-disk2"
    assert storage.volume_name_for("a" * 63, 999, "qcow2") == "a" * 63 + "-disk999.qcow2"
    for bad in ("../x", "a b", "<x>", "web\n", ""):
        with pytest.raises(StorageError, match="Invalid VM name"):
            storage.volume_name_for(bad, 0, "raw")
    with pytest.raises(StorageError, match="disk index"):
        storage.volume_name_for("web-01", -1, "raw")
    with pytest.raises(StorageError, match="Unsupported volume format"):
        storage.volume_name_for("web-01", 0, "vmdk")


# --- create -------------------------------------------------------------------------------------


def test_create_raw_is_sparse_and_sized(dirpool):
    vol = storage.create_volume(dirpool.conn, dirpool.name, "data.raw", 2 * GIB, "raw")
    path = str(dirpool.dir / "data.raw")
    assert vol["path"] == path and vol["format"] == "raw" and vol["capacity"] == 2 * GIB
    assert vol["backing_depth"] == 1
    info = qemu_img_info(path)
    assert info["format"] == "raw"
    assert info["virtual-size"] == 2 * GIB
    assert os.stat(path).st_blocks == 0  # sparse: nothing allocated
    seen = libvirt_view(dirpool.conn, path)
    assert (seen["format"], seen["capacity"], seen["allocation"]) == ("raw", 2 * GIB, 0)


def test_create_qcow2_is_v3_and_sized(dirpool):
    vol = storage.create_volume(dirpool.conn, dirpool.name, "web-01-disk0.qcow2", 20 * GIB, "qcow2")
    info = qemu_img_info(vol["path"])
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 20 * GIB
    assert info["format-specific"]["data"]["compat"] == "1.1"
    assert "backing-filename" not in info
    assert os.path.getsize(vol["path"]) < 2 * MIB  # thin
    seen = libvirt_view(dirpool.conn, vol["path"])
    assert (seen["format"], seen["capacity"]) == ("qcow2", 20 * GIB)


def test_create_refuses_more_than_available_with_figures(dirpool):
    available = dirpool.pool.info()[3]
    asked = available + 10 * GIB
    with pytest.raises(InsufficientSpace) as caught:
        storage.create_volume(dirpool.conn, dirpool.name, "huge.raw", asked, "raw")
    message = str(caught.value)
    assert f"pool {dirpool.name}" in message
    requested, reported = gib_figures(message)
    assert requested == pytest.approx(asked / GIB, abs=0.01)
    assert reported == pytest.approx(dirpool.pool.info()[3] / GIB, abs=0.5)
    assert pool_files(dirpool) == [] and pool_volumes(dirpool) == []
    with pytest.raises(InsufficientSpace):
        storage.create_volume(dirpool.conn, dirpool.name, "huge.qcow2", asked, "qcow2")


def test_create_refuses_duplicates_and_bad_names(dirpool):
    storage.create_volume(dirpool.conn, dirpool.name, "a.raw", MIB, "raw")
    with pytest.raises(StorageError, match=f"a.raw already exists in pool {dirpool.name}"):
        storage.create_volume(dirpool.conn, dirpool.name, "a.raw", 2 * MIB, "qcow2")
    assert qemu_img_info(str(dirpool.dir / "a.raw"))["virtual-size"] == MIB  # untouched
    for bad in ("../x", "a b", "<x>", "x/y", ".x", "x\n", ""):
        with pytest.raises(StorageError, match="Invalid volume name"):
            storage.create_volume(dirpool.conn, dirpool.name, bad, MIB, "raw")
    assert pool_files(dirpool) == ["a.raw"]
    assert not (IMAGES_DIR / "x").exists()


def test_a_file_made_behind_libvirts_back_counts_as_existing(dirpool):
    (dirpool.dir / "stray.raw").write_bytes(b"\0" * 4096)
    with pytest.raises(StorageError, match=r"stray\.raw already exists"):
        storage.create_volume(dirpool.conn, dirpool.name, "stray.raw", MIB, "raw")


def test_create_refuses_unknown_inactive_pools_bad_sizes_and_formats(dirpool, make_pool):
    conn = dirpool.conn
    with pytest.raises(StorageError, match="Pool no-such-pool does not exist on this host"):
        storage.create_volume(conn, "no-such-pool", "a.raw", MIB, "raw")
    for size in (0, -1, 1.5, True):
        with pytest.raises(StorageError, match="size"):
            storage.create_volume(conn, dirpool.name, "a.raw", size, "raw")
    with pytest.raises(StorageError, match="Unsupported volume format 'vmdk'"):
        storage.create_volume(conn, dirpool.name, "a.vmdk", MIB, "vmdk")
    stopped = make_pool()
    stopped.pool.destroy()
    with pytest.raises(StorageError, match=f"Pool {stopped.name} is not active"):
        storage.create_volume(conn, stopped.name, "a.raw", MIB, "raw")
    assert pool_files(dirpool) == [] and pool_files(stopped) == []


# --- clones -------------------------------------------------------------------------------------


def test_linked_clone_has_backing_file_and_depth_two(dirpool, make_pool):
    conn = dirpool.conn
    other = make_pool()  # the base lives in another pool of the same host
    base = storage.create_volume(conn, other.name, "debian-12.qcow2", 4 * GIB, "qcow2")
    clone = storage.clone_volume(conn, dirpool.name, base["path"], "web-01-disk0.qcow2", "linked")

    info = qemu_img_info(clone["path"])
    assert info["format"] == "qcow2"
    assert info["full-backing-filename"] == base["path"]
    assert info["backing-filename-format"] == "qcow2"  # not the raw libvirt assumes
    assert info["virtual-size"] == 4 * GIB
    assert libvirt_view(conn, clone["path"])["backing_path"] == base["path"]
    assert clone["backing_path"] == base["path"] and clone["backing_depth"] == 2
    assert storage.backing_chain(conn, clone["path"]) == [clone["path"], base["path"]]
    assert storage.backing_depth(conn, clone["path"]) == 2
    assert storage.backing_depth(conn, base["path"]) == 1


def test_linked_clone_of_raw_base_records_raw_backing(dirpool):
    conn = dirpool.conn
    base = storage.create_volume(conn, dirpool.name, "base.raw", 64 * MIB, "raw")
    clone = storage.clone_volume(conn, dirpool.name, base["path"], "c.qcow2", "linked")
    info = qemu_img_info(clone["path"])
    assert info["backing-filename-format"] == "raw"
    assert info["virtual-size"] == 64 * MIB
    with pytest.raises(StorageError, match="always qcow2"):
        storage.clone_volume(conn, dirpool.name, base["path"], "d.raw", "linked", fmt="raw")


def test_full_clone_is_independent_flattened_and_same_size(dirpool):
    conn = dirpool.conn
    base = storage.create_volume(conn, dirpool.name, "base.raw", 64 * MIB, "raw")
    marker = b"paddock-base-image-marker"
    with open(base["path"], "r+b") as fh:
        fh.seek(MIB)
        fh.write(marker)
    linked = storage.clone_volume(conn, dirpool.name, base["path"], "linked.qcow2", "linked")

    full = storage.clone_volume(conn, dirpool.name, linked["path"], "full.qcow2", "full")
    info = qemu_img_info(full["path"])
    assert info["format"] == "qcow2"  # the source's format
    assert "backing-filename" not in info
    assert info["virtual-size"] == 64 * MIB
    assert full["backing_path"] == "" and full["backing_depth"] == 1
    assert libvirt_view(conn, full["path"])["backing_path"] == ""

    as_raw = storage.clone_volume(conn, dirpool.name, linked["path"], "full.raw", "full", fmt="raw")
    assert qemu_img_info(as_raw["path"])["format"] == "raw"
    assert qemu_img_info(as_raw["path"])["virtual-size"] == 64 * MIB
    with open(as_raw["path"], "rb") as fh:  # the base's data, copied through the chain
        fh.seek(MIB)
        assert fh.read(len(marker)) == marker
    # the copy stands alone: the base can go once the linked clone is gone
    assert storage.delete_volume(conn, linked["path"]) is True
    assert storage.delete_volume(conn, base["path"]) is True
    assert qemu_img_info(full["path"])["virtual-size"] == 64 * MIB


def test_clone_refusals(dirpool):
    conn = dirpool.conn
    base = storage.create_volume(conn, dirpool.name, "base.qcow2", GIB, "qcow2")
    with pytest.raises(StorageError, match=r"base\.qcow2 already exists"):
        storage.clone_volume(conn, dirpool.name, base["path"], "base.qcow2", "full")
    with pytest.raises(StorageError, match="Unknown clone mode"):
        storage.clone_volume(conn, dirpool.name, base["path"], "c.qcow2", "deep")
    with pytest.raises(StorageError, match="There is no volume at"):
        storage.clone_volume(conn, dirpool.name, str(dirpool.dir / "nope"), "c.qcow2", "linked")
    with pytest.raises(StorageError, match="Invalid volume name"):
        storage.clone_volume(conn, dirpool.name, base["path"], "../c.qcow2", "linked")
    assert pool_files(dirpool) == ["base.qcow2"]


def test_linked_chain_deeper_than_eight_is_refused(dirpool):
    conn = dirpool.conn
    top = storage.create_volume(conn, dirpool.name, "layer1.qcow2", GIB, "qcow2")["path"]
    for depth in range(2, storage.MAX_CHAIN_DEPTH + 1):
        top = storage.clone_volume(conn, dirpool.name, top, f"layer{depth}.qcow2", "linked")["path"]
    assert storage.backing_depth(conn, top) == 8
    assert len(qemu_img_info(top).get("full-backing-filename", "")) > 0
    with pytest.raises(StorageError, match="chain of 9 images; the limit is 8"):
        storage.clone_volume(conn, dirpool.name, top, "layer9.qcow2", "linked")
    assert "layer9.qcow2" not in pool_files(dirpool)
    flat = storage.clone_volume(conn, dirpool.name, top, "flat.qcow2", "full")
    assert flat["backing_depth"] == 1


# --- delete -------------------------------------------------------------------------------------


def test_delete_refuses_a_base_in_use_then_works(dirpool, make_pool):
    conn = dirpool.conn
    other = make_pool()
    base = storage.create_volume(conn, dirpool.name, "base.qcow2", GIB, "qcow2")
    clone = storage.clone_volume(conn, other.name, base["path"], "vm-disk0.qcow2", "linked")

    with pytest.raises(StorageError) as caught:
        storage.delete_volume(conn, base["path"])
    assert "base.qcow2 is still used as the base image of vm-disk0.qcow2" in str(caught.value)
    assert other.name in str(caught.value)
    assert os.path.exists(base["path"])
    assert libvirt_view(conn, base["path"])["name"] == "base.qcow2"

    assert storage.delete_volume(conn, clone["path"]) is True
    assert storage.delete_volume(conn, base["path"]) is True
    assert not os.path.exists(base["path"]) and not os.path.exists(clone["path"])
    assert pool_volumes(dirpool) == [] and pool_volumes(other) == []
    # idempotent
    assert storage.delete_volume(conn, base["path"]) is False
    assert storage.delete_volume(conn, str(dirpool.dir / "never-existed.raw")) is False


def test_files_made_behind_libvirts_back_are_found(dirpool):
    conn = dirpool.conn
    base = storage.create_volume(conn, dirpool.name, "base.qcow2", GIB, "qcow2")
    stray = dirpool.dir / "stray.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base["path"], str(stray)],
        check=True, timeout=30,
    )  # fmt: skip
    assert storage.backing_chain(conn, str(stray)) == [str(stray), base["path"]]
    with pytest.raises(StorageError, match=r"still used as the base image of stray\.qcow2"):
        storage.delete_volume(conn, base["path"])
    assert storage.delete_volume(conn, str(stray)) is True
    assert not stray.exists()
    (dirpool.dir / "other.raw").write_bytes(b"\0" * 4096)
    assert storage.delete_volume(conn, str(dirpool.dir / "other.raw")) is True
    assert pool_files(dirpool) == ["base.qcow2"]


def _domain_with_disk(conn: libvirt.virConnect, path: str, fmt: str) -> str:
    """A tiny domain document with the volume as its disk (TCG when KVM is not usable)."""
    name = f"{PREFIX}{uuid.uuid4().hex[:6]}-storage"
    dom = etree.Element("domain", type="kvm" if kvm_usable(conn) else "qemu")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = "64"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    devices = etree.SubElement(dom, "devices")
    disk = etree.SubElement(devices, "disk", type="file", device="disk")
    etree.SubElement(disk, "driver", name="qemu", type=fmt)
    etree.SubElement(disk, "source", file=path)
    etree.SubElement(disk, "target", dev="vda", bus="virtio")
    etree.SubElement(devices, "memballoon", model="none")
    return etree.tostring(dom, encoding="unicode")


def test_delete_refuses_a_disk_of_a_defined_domain(dirpool):
    conn = dirpool.conn
    vol = storage.create_volume(conn, dirpool.name, "attached.qcow2", GIB, "qcow2")
    domain = conn.defineXML(_domain_with_disk(conn, vol["path"], "qcow2"))
    name = domain.name()
    try:
        with pytest.raises(StorageError, match=f"still a disk of VM {name}"):
            storage.delete_volume(conn, vol["path"])
        assert os.path.exists(vol["path"])
    finally:
        domain.undefine()
    assert storage.delete_volume(conn, vol["path"]) is True


# --- grow ---------------------------------------------------------------------------------------


def test_grow_raw_and_qcow2_and_refuse_shrink(dirpool):
    conn = dirpool.conn
    raw = storage.create_volume(conn, dirpool.name, "g.raw", GIB, "raw")
    grown = storage.grow_volume(conn, raw["path"], 3 * GIB)
    assert grown["capacity"] == 3 * GIB
    assert qemu_img_info(raw["path"])["virtual-size"] == 3 * GIB
    assert os.stat(raw["path"]).st_blocks == 0  # still sparse
    assert libvirt_view(conn, raw["path"])["capacity"] == 3 * GIB

    qcow = storage.create_volume(conn, dirpool.name, "g.qcow2", 20 * GIB, "qcow2")
    assert storage.grow_volume(conn, qcow["path"], 25 * GIB)["capacity"] == 25 * GIB
    assert qemu_img_info(qcow["path"])["virtual-size"] == 25 * GIB

    with pytest.raises(StorageError) as caught:
        storage.grow_volume(conn, qcow["path"], 10 * GIB)
    assert str(caught.value) == ("Shrinking is not supported: g.qcow2 is 25 GiB, asked 10 GiB.")
    assert qemu_img_info(qcow["path"])["virtual-size"] == 25 * GIB
    assert storage.grow_volume(conn, qcow["path"], 25 * GIB)["capacity"] == 25 * GIB  # no-op
    with pytest.raises(StorageError, match="There is no volume at"):
        storage.grow_volume(conn, str(dirpool.dir / "nope.raw"), 2 * GIB)


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_grow_refuses_a_disk_of_a_running_vm(dirpool, fmt):
    conn = dirpool.conn
    vol = storage.create_volume(conn, dirpool.name, f"live.{fmt}", GIB, fmt)
    domain = conn.createXML(_domain_with_disk(conn, vol["path"], fmt), 0)  # transient, running
    try:
        with pytest.raises(StorageError, match=f"disk of running VM {domain.name()}"):
            storage.grow_volume(conn, vol["path"], 2 * GIB)
        assert qemu_img_info(vol["path"])["virtual-size"] == GIB
        assert domain.blockInfo("vda")[0] == GIB
    finally:
        domain.destroy()
    assert storage.grow_volume(conn, vol["path"], 2 * GIB)["capacity"] == 2 * GIB


def test_grow_raw_beyond_available_is_refused(dirpool):
    conn = dirpool.conn
    raw = storage.create_volume(conn, dirpool.name, "g.raw", GIB, "raw")
    target = GIB + dirpool.pool.info()[3] + 10 * GIB
    with pytest.raises(InsufficientSpace) as caught:
        storage.grow_volume(conn, raw["path"], target)
    requested, _available = gib_figures(str(caught.value))
    assert requested == pytest.approx((target - GIB) / GIB, abs=0.01)  # the delta
    assert qemu_img_info(raw["path"])["virtual-size"] == GIB


# --- upload -------------------------------------------------------------------------------------


def test_upload_lands_byte_identical(dirpool):
    conn = dirpool.conn
    payload = payload_of(3 * MIB)
    vol = storage.upload_volume(
        conn, dirpool.name, "disk.raw", chunks(payload), len(payload), fmt="raw"
    )
    assert vol["capacity"] == len(payload) and vol["format"] == "raw"
    assert Path(vol["path"]).read_bytes() == payload
    assert download(conn, vol["path"], len(payload)) == payload
    assert qemu_img_info(vol["path"])["virtual-size"] == len(payload)


@pytest.mark.parametrize("delta", [-CHUNK, -1, 1, CHUNK])
def test_upload_size_mismatch_leaves_no_partial_volume(dirpool, delta):
    declared = 3 * MIB
    payload = payload_of(declared + delta, seed=delta)
    with pytest.raises(StorageError) as caught:
        storage.upload_volume(dirpool.conn, dirpool.name, "short.raw", chunks(payload), declared)
    message = str(caught.value)
    assert f"declared {declared} bytes, received " in message
    if delta < 0:
        assert f"received {declared + delta}." in message
    else:
        assert "received at least" in message
    assert pool_files(dirpool) == [] and pool_volumes(dirpool) == []


def test_upload_interrupted_by_the_client_leaves_no_partial_volume(dirpool):
    def dropped():
        yield b"\1" * CHUNK
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        storage.upload_volume(dirpool.conn, dirpool.name, "cut.raw", dropped(), MIB)
    assert pool_files(dirpool) == [] and pool_volumes(dirpool) == []


def test_upload_memory_stays_bounded(dirpool):
    size = 32 * MIB

    def generated():
        for _ in range(size // CHUNK):
            yield payload_of(CHUNK, seed=_)

    tracemalloc.start()
    try:
        storage.upload_volume(dirpool.conn, dirpool.name, "big.raw", generated(), size)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB, peak
    assert os.path.getsize(dirpool.dir / "big.raw") == size


def _qcow2_bytes(tmp_path: Path, backing: str | None = None) -> bytes:
    image = tmp_path / f"img-{uuid.uuid4().hex[:6]}.qcow2"
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        cmd += ["-F", "qcow2", "-b", backing]
    cmd += [str(image)] + ([] if backing else [str(GIB)])
    subprocess.run(cmd, check=True, timeout=30)
    return image.read_bytes()


def test_upload_of_an_image_with_a_backing_file_is_refused(dirpool, tmp_path):
    conn = dirpool.conn
    secret = storage.create_volume(conn, dirpool.name, "other-tenant.qcow2", GIB, "qcow2")
    payload = _qcow2_bytes(tmp_path, backing=secret["path"])
    assert len(payload) > 2 * CHUNK
    read = []

    def counted():
        for chunk in chunks(payload):
            read.append(len(chunk))
            yield chunk

    with pytest.raises(StorageError) as caught:
        storage.upload_volume(
            conn, dirpool.name, "evil.qcow2", counted(), len(payload), fmt="qcow2"
        )
    assert f"refers to the backing file {secret['path']}" in str(caught.value)
    assert len(read) == 1  # stopped at the header, not after the whole image
    with pytest.raises(StorageError, match="declared raw but its content is a qcow2 image"):
        storage.upload_volume(conn, dirpool.name, "evil.raw", chunks(payload), len(payload))
    assert pool_files(dirpool) == ["other-tenant.qcow2"]


def test_libvirts_probe_backs_up_the_header_check(dirpool, tmp_path, monkeypatch):
    conn = dirpool.conn
    secret = storage.create_volume(conn, dirpool.name, "other-tenant.qcow2", GIB, "qcow2")
    payload = _qcow2_bytes(tmp_path, backing=secret["path"])
    monkeypatch.setattr(driver_storage, "_content_problem", lambda header, fmt: None)
    with pytest.raises(StorageError) as caught:
        storage.upload_volume(conn, dirpool.name, "evil.img", chunks(payload), len(payload))
    assert f"refers to the backing file {secret['path']}" in str(caught.value)
    assert pool_files(dirpool) == ["other-tenant.qcow2"]


def test_upload_refuses_qcow2_with_an_external_data_file(dirpool, tmp_path):
    image = tmp_path / "external.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o",
         f"data_file={tmp_path / 'external.data'}", str(image), str(MIB)],
        check=True, timeout=30,
    )  # fmt: skip
    payload = image.read_bytes()
    with pytest.raises(StorageError, match="external file"):
        storage.upload_volume(
            dirpool.conn, dirpool.name, "ext.qcow2", chunks(payload), len(payload), fmt="qcow2"
        )
    assert pool_files(dirpool) == []


def test_a_wrong_image_is_stopped_before_the_rest_is_sent(dirpool, tmp_path):
    sent = []

    def counted():
        header = _qcow2_bytes(tmp_path)[:CHUNK]
        for index in range(64):
            sent.append(index)
            yield header if index == 0 else b"\0" * CHUNK

    with pytest.raises(StorageError, match="declared raw but its content is a qcow2 image"):
        storage.upload_volume(dirpool.conn, dirpool.name, "x.raw", counted(), 64 * CHUNK)
    assert len(sent) == 1
    assert pool_files(dirpool) == []


def test_upload_format_must_match_the_content(dirpool, tmp_path):
    conn = dirpool.conn
    payload = _qcow2_bytes(tmp_path)
    with pytest.raises(StorageError, match="declared raw but its content is a qcow2 image"):
        storage.upload_volume(conn, dirpool.name, "img.raw", chunks(payload), len(payload))
    assert pool_files(dirpool) == []
    vol = storage.upload_volume(
        conn, dirpool.name, "img.qcow2", chunks(payload), len(payload), fmt="qcow2"
    )
    assert vol["format"] == "qcow2" and vol["capacity"] == GIB  # the image's virtual size
    assert qemu_img_info(vol["path"])["format"] == "qcow2"
    raw = payload_of(MIB)
    with pytest.raises(StorageError, match="declared qcow2 but its content is a raw image"):
        storage.upload_volume(conn, dirpool.name, "x.qcow2", chunks(raw), MIB, fmt="qcow2")
    assert pool_files(dirpool) == ["img.qcow2"]


def test_upload_of_an_iso_is_raw_data(dirpool):
    iso = bytearray(MIB)
    iso[32769 : 32769 + 5] = b"CD001"  # the ISO 9660 primary volume descriptor's magic
    vol = storage.upload_volume(dirpool.conn, dirpool.name, "tiny.iso", chunks(bytes(iso)), MIB)
    assert vol["format"] == "iso"  # libvirt's probe; the data is raw
    assert libvirt_view(dirpool.conn, vol["path"])["format"] == "iso"
    assert Path(vol["path"]).read_bytes() == bytes(iso)


# --- logical pools (libvirt's test driver: this machine has no device-mapper) -------------------


@pytest.fixture
def lvm_host(tmp_path):
    node = etree.Element("node")
    cpu = etree.SubElement(node, "cpu")
    for tag, value in (("mhz", "2000"), ("model", "x86_64"), ("active", "2"), ("nodes", "1"),
                       ("sockets", "1"), ("cores", "2"), ("threads", "1")):  # fmt: skip
        etree.SubElement(cpu, tag).text = value
    etree.SubElement(node, "memory").text = str(4 * 1024 * 1024)
    pool = etree.SubElement(node, "pool", type="logical")
    etree.SubElement(pool, "name").text = "vg0"
    source = etree.SubElement(pool, "source")
    etree.SubElement(source, "name").text = "vg0"
    etree.SubElement(source, "format", type="lvm2")
    etree.SubElement(etree.SubElement(pool, "target"), "path").text = "/dev/vg0"
    path = tmp_path / "lvm-node.xml"
    path.write_bytes(etree.tostring(node))
    conn = libvirt.open(f"test://{path}")
    yield conn
    conn.close()


def test_logical_pool_create_and_delete(lvm_host):
    vol = storage.create_volume(lvm_host, "vg0", "db-01-disk1", 8 * GIB, "")
    assert vol["path"] == "/dev/vg0/db-01-disk1"
    assert vol["format"] == "" and vol["capacity"] == 8 * GIB
    pool = lvm_host.storagePoolLookupByName("vg0")
    assert pool.listVolumes() == ["db-01-disk1"]
    seen = parse_volume(pool.storageVolLookupByName("db-01-disk1").XMLDesc(0))
    assert (seen["capacity"], seen["allocation"]) == (8 * GIB, 8 * GIB)  # thick LV

    assert storage.create_volume(lvm_host, "vg0", "raw-lv", GIB, "raw")["format"] == ""
    with pytest.raises(StorageError, match="logical \\(LVM\\) pool"):
        storage.create_volume(lvm_host, "vg0", "x.qcow2", GIB, "qcow2")
    with pytest.raises(StorageError, match="needs a directory pool"):
        storage.clone_volume(lvm_host, "vg0", vol["path"], "snap", "linked")
    with pytest.raises(InsufficientSpace, match="requested 200 GiB, available 91 GiB"):
        storage.create_volume(lvm_host, "vg0", "huge", 200 * GIB, "")

    assert storage.delete_volume(lvm_host, vol["path"]) is True
    assert pool.listVolumes() == ["raw-lv"]
    assert storage.delete_volume(lvm_host, vol["path"]) is False


def test_default_test_driver_dir_pool(tmp_path):
    conn = libvirt.open("test:///default")
    try:
        vol = storage.create_volume(conn, "default-pool", "t.qcow2", GIB, "qcow2")
        pool = conn.storagePoolLookupByName("default-pool")
        assert parse_volume(pool.storageVolLookupByName("t.qcow2").XMLDesc(0))["capacity"] == GIB
        assert storage.delete_volume(conn, vol["path"]) is True
        assert "t.qcow2" not in pool.listVolumes()
    finally:
        conn.close()
