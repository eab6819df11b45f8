"""The floors of the house, checked on the code itself (no Django, no services).

- ``hosts/driver/`` is the only package that imports ``libvirt``;
- ``panel/`` (the core every room stands on) imports no app;
- ``hosts/`` does not import ``vms/`` (vms registers what hosts must call);
- ``vms/`` and ``metrics/`` do not import ``tuning/`` (tuning registers ``vms.hooks``), and
  ``tuning/`` reaches no host (no driver, executor, SSH or subprocess);
- no function-local import of Paddock's own modules hides a cycle: imports sit at module top,
  except in an ``AppConfig.ready()`` (Django's place for an app to register itself) and under
  ``if TYPE_CHECKING``.

Each rule reads every product module with ``ast``; a failure names the file, line and import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("paddock", "panel", "hosts", "vms", "metrics", "tuning")
APPS = ("hosts", "vms", "metrics", "tuning")
FIRST_PARTY = (*PRODUCT,)


def _modules(*packages: str) -> list[Path]:
    files = []
    for package in packages:
        base = ROOT / package
        if not base.exists():
            continue
        files += [p for p in base.rglob("*.py") if "migrations" not in p.parts]
    return sorted(files)


def _imports(path: Path, source: str | None = None):
    """(line, module, is_local, is_allowed) for every import in ``path``.

    ``is_allowed``: inside an ``AppConfig.ready()`` or under ``if TYPE_CHECKING``.
    """
    text = path.read_text() if source is None else source
    tree = ast.parse(text, filename=str(path))
    out = []

    def visit(node, local: bool, in_ready: bool, type_checking: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    out.append((child.lineno, alias.name, local, in_ready or type_checking))
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against the module's package
                    package = path.relative_to(ROOT).with_suffix("").parts[: -child.level]
                    name = ".".join([*package, child.module] if child.module else package)
                else:
                    name = child.module or ""
                out.append((child.lineno, name, local, in_ready or type_checking))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                ready = in_ready or getattr(child, "name", "") == "ready"
                visit(child, True, ready, type_checking)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                visit(child, local, in_ready, True)
            else:
                visit(child, local, in_ready, type_checking)

    visit(tree, False, False, False)
    return out


def _is_type_checking(test) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top(name: str) -> str:
    return name.split(".")[0]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_only_the_driver_imports_libvirt():
    offenders = [
        f"{_rel(p)}:{line} imports {name}"
        for p in _modules(*PRODUCT)
        if (ROOT / "hosts" / "driver") not in p.parents
        for line, name, _local, _allowed in _imports(p)
        if _top(name) in ("libvirt", "libvirtaio", "libvirt_qemu", "libvirt_lxc")
    ]
    assert not offenders, "libvirt outside hosts/driver/:\n" + "\n".join(offenders)


def test_the_core_imports_no_app():
    offenders = [
        f"{_rel(p)}:{line} imports {name}"
        for p in _modules("panel")
        for line, name, _local, _allowed in _imports(p)
        if _top(name) in (*APPS, "paddock")
    ]
    assert not offenders, "panel/ (the core) imports an app:\n" + "\n".join(offenders)


def test_hosts_does_not_import_vms():
    offenders = [
        f"{_rel(p)}:{line} imports {name}"
        for p in _modules("hosts")
        for line, name, _local, _allowed in _imports(p)
        if _top(name) in ("vms", "metrics", "tuning", "paddock")
    ]
    assert not offenders, "hosts/ imports a room above it:\n" + "\n".join(offenders)


def test_vms_and_metrics_do_not_import_tuning():
    """Tuning stands on vms and metrics (it reads VMs, their history and their domain XML);
    vms calls it only through the hooks tuning registers (``vms.hooks``)."""
    offenders = [
        f"{_rel(p)}:{line} imports {name}"
        for p in _modules("vms", "metrics")
        for line, name, _local, _allowed in _imports(p)
        if _top(name) in ("tuning", "paddock")
    ]
    assert not offenders, "vms/ or metrics/ imports a room above it:\n" + "\n".join(offenders)


def test_tuning_talks_to_no_host():
    """``tuning/`` computes plans; the driver and the executor are for the rooms that apply."""
    offenders = [
        f"{_rel(p)}:{line} imports {name}"
        for p in _modules("tuning")
        for line, name, _local, _allowed in _imports(p)
        if name.startswith(("hosts.driver", "hosts.executor", "paramiko", "asyncssh"))
        or _top(name) in ("libvirt", "subprocess", "paddock")
    ]
    assert not offenders, "tuning/ reaches a host:\n" + "\n".join(offenders)


def test_no_function_local_import_of_paddock_modules():
    offenders = [
        f"{_rel(p)}:{line} imports {name} inside a function"
        for p in _modules(*PRODUCT)
        for line, name, local, allowed in _imports(p)
        if local and not allowed and _top(name) in FIRST_PARTY
    ]
    assert not offenders, "function-local imports (move them to the top):\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import libvirt\n", [(1, "libvirt", False, False)]),
        ("def f():\n    from vms import models\n", [(2, "vms", True, False)]),
        ("class A:\n    def ready(self):\n        import vms.x\n", [(3, "vms.x", True, True)]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import vms\n",
            [(1, "typing", False, False), (3, "vms", False, True)],
        ),
    ],
)
def test_the_import_reader_sees_what_the_rules_need(source, expected):
    """The checks above cannot pass by reading nothing."""
    assert _imports(ROOT / "hosts" / "probe.py", source) == expected


def test_relative_imports_are_resolved_to_their_package():
    found = _imports(ROOT / "hosts" / "driver" / "probe.py", "from ..sync import x\n")
    assert found == [(1, "hosts.sync", False, False)]
    assert len(_modules("hosts")) > 10
