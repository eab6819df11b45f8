"""The embedded default's data folder is private: another local user (``nobody``) can read
neither the SQLite database with its session keys nor the secret key."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from panel.datadir import private_file, secure_data_dir

REPO = Path(__file__).resolve().parents[2]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None,
    reason="needs root and runuser to try reading as another user",
)

# Run in a fresh interpreter: the settings create the folder when they load.
SCRIPT = r"""
import json, os, subprocess, sys
import django
django.setup()
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from django.db import connection

call_command("migrate", verbosity=0)
session = SessionStore()
session["who"] = "alice"
session.create()
data = os.environ["PADDOCK_DATA_DIR"]
db = os.path.join(data, "paddock.sqlite3")
files = [db, db + "-wal", db + "-shm", os.path.join(data, "secret_key")]
modes = {p: oct(os.stat(p).st_mode & 0o777) for p in [data, *files] if os.path.exists(p)}
# While the connection is open (the -wal and -shm files exist), try to read as nobody.
reads = {
    p: subprocess.run(["runuser", "-u", "nobody", "--", "cat", p], capture_output=True).returncode
    for p in files if os.path.exists(p)
}
print(json.dumps({"modes": modes, "reads": reads, "session": session.session_key}))
"""


@pytest.fixture
def public_parent():
    """A folder every user may traverse, as a checkout's parent usually is (pytest's own
    temporary folders are private, which would hide the data folder's modes)."""
    parent = Path(tempfile.mkdtemp(prefix="paddock-datadir-", dir="/tmp"))
    parent.chmod(0o755)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


def _start_embedded(data_dir: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PADDOCK_SQLITE_PATH"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="paddock.settings",
        PADDOCK_DEMO="1",
        PADDOCK_DATA_DIR=str(data_dir),
        PADDOCK_SSH_KEY=str(data_dir / "ssh" / "id_ed25519"),
    )
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@needs_root
def test_other_local_user_cannot_read_sessions_or_secret_key(public_parent):
    data = public_parent / "var"
    result = _start_embedded(data)
    db = str(data / "paddock.sqlite3")
    assert result["modes"][str(data)] == "0o700"
    for path in (db, db + "-wal", db + "-shm", str(data / "secret_key")):
        assert result["modes"][path] == "0o600", (path, result["modes"])
        assert result["reads"][path] != 0, f"nobody could read {path}"
    # The same read works on a file that is not protected: the refusal above is the modes'.
    control = public_parent / "control"
    control.write_text(result["session"])
    control.chmod(0o644)
    readable = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(control)])
    assert readable.returncode == 0


@needs_root
def test_loose_data_folder_is_tightened_on_start(public_parent):
    data = public_parent / "var"
    (data / "ssh").mkdir(parents=True, mode=0o755)
    data.chmod(0o755)
    (data / "ssh").chmod(0o755)
    for name in ("paddock.sqlite3", "secret_key", "ssh/id_ed25519", "ssh/id_ed25519.pub"):
        (data / name).write_text("")
        (data / name).chmod(0o644)
    (data / "secret_key").write_text("an-old-demo-key-with-enough-length-to-be-used-here")
    result = _start_embedded(data)
    assert _mode(data) == 0o700
    assert _mode(data / "ssh") == 0o700
    for name in ("paddock.sqlite3", "secret_key", "ssh/id_ed25519", "ssh/id_ed25519.pub"):
        assert _mode(data / name) == 0o600, name
    assert result["reads"][str(data / "paddock.sqlite3")] != 0


def test_private_file_is_created_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        path = private_file(tmp_path / "new" / "db.sqlite3")
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


def test_secure_data_dir_keeps_owner_execute_bit_and_skips_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("")
    outside.chmod(0o644)
    data = tmp_path / "data"
    data.mkdir()
    (data / "tool").write_text("")
    (data / "tool").chmod(0o755)
    (data / "link").symlink_to(outside)
    secure_data_dir(data)
    assert _mode(data / "tool") == 0o700
    assert _mode(outside) == 0o644
