"""Regenerate hosts/fixtures/demo-node.xml, the demo's simulated host, from hosts/testnode.py.

Run from the repository root: ``.venv/bin/python scripts/gen_demo_node.py``. The file is the
default node (36 domains, seed 7) behind a comment that names this script;
tests/unit/test_testnode.py fails when the fixture and the generator disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hosts.testnode import build_demo_fixture_xml  # noqa: E402

FIXTURE = REPO_ROOT / "hosts" / "fixtures" / "demo-node.xml"


def main() -> int:
    xml = build_demo_fixture_xml()
    if FIXTURE.exists() and FIXTURE.read_text(encoding="utf-8") == xml:
        print(f"{FIXTURE.relative_to(REPO_ROOT)} is up to date")
        return 0
    FIXTURE.write_text(xml, encoding="utf-8")
    print(f"wrote {FIXTURE.relative_to(REPO_ROOT)} ({len(xml)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
