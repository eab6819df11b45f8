"""The data folder (``PADDOCK_DATA_DIR``): private to the user Paddock runs as.

It holds the embedded SQLite database (session keys in clear), the generated secret key and the
SSH client key, so the folder and everything in it are owner-only: folders 0700, files 0600
(an owner's execute bit is kept). A folder left with looser modes by an older version, a copy
or a restore is tightened every time the settings load.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def _tighten(path: Path, st: os.stat_result) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:  # only then: a correct folder on a read-only mount is left alone
        os.chmod(path, mode & ~0o077 | (DIR_MODE if stat.S_ISDIR(st.st_mode) else 0))


def secure_data_dir(path: Path) -> Path:
    """Create ``path`` owner-only, or tighten it and everything under it (symlinks are not
    followed: what they point to is not Paddock's)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _tighten(path, path.stat())
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = Path(root) / name
            try:
                st = entry.lstat()
            except FileNotFoundError:  # removed while we looked
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            _tighten(entry, st)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists as an owner-only file before anything else creates it.

    SQLite creates a missing database with the process umask (usually 0644) and gives its
    ``-wal`` and ``-shm`` files the database file's mode, so an empty 0600 file made first
    (SQLite takes an empty file as a new database) keeps all three private.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    _tighten(path, path.stat())
    return path
