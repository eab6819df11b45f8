"""The deployment files stay in step with the code they start.

docker-compose.yml, the Dockerfile, the Makefile and the CI entry point refer to
modules, management commands and scripts by name only; these tests catch a rename or
removal that leaves one of them pointing at nothing.
"""

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import django
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_SERVICES = {"postgres", "redis", "migrate", "web", "worker", "beat", "watcher"}
SKIP_DIRS = {".git", ".venv", "node_modules", "staticfiles", "var", "__pycache__"}
REQUIRED_SCRIPTS = {"scripts/setup-system.sh", "scripts/start-services.sh"}


def load_compose():
    path = ROOT / "docker-compose.yml"
    assert path.is_file(), "docker-compose.yml is missing"
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    assert isinstance(data.get("services"), dict), "docker-compose.yml has no services"
    return data


def as_argv(command):
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def app_services():
    """{name: service} for the services that run the Paddock image (built from here)."""
    services = load_compose()["services"]
    return {name: svc for name, svc in services.items() if "build" in svc}


def dockerfile_cmd():
    path = ROOT / "Dockerfile"
    assert path.is_file(), "Dockerfile is missing"
    lines = path.read_text().splitlines()
    cmds = [line for line in lines if line.strip().upper().startswith("CMD ")]
    assert cmds, "Dockerfile has no CMD"
    cmd = cmds[-1].split(None, 1)[1].strip()  # the last CMD is the one that counts
    return json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)


def project_management_commands():
    names = set()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        path = Path(dirpath)
        if path.name == "commands" and path.parent.name == "management":
            names.update(f[:-3] for f in filenames if f.endswith(".py"))
    names.discard("__init__")
    return names


def django_management_commands():
    base = Path(django.__file__).resolve().parent
    return {p.stem for p in base.glob("**/management/commands/*.py")} - {"__init__"}


def defines(path, name):
    """Whether the module source at path binds name at top level."""
    pattern = (
        rf"^(?:{name}\s*(?::[^=\n]*)?="
        rf"|(?:async\s+)?def\s+{name}\b"
        rf"|class\s+{name}\b"
        rf"|from\s+\S+\s+import\s+.*\b{name}\b)"
    )
    return re.search(pattern, path.read_text(), re.MULTILINE) is not None


def option_value(argv, *flags):
    for i, arg in enumerate(argv):
        if arg in flags and i + 1 < len(argv):
            return argv[i + 1]
        for flag in flags:
            if flag.startswith("--") and arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def check_manage_py(argv):
    if not (ROOT / "manage.py").is_file():
        return "manage.py is missing"
    name = " ".join(argv[2:3])
    known = project_management_commands() | django_management_commands()
    if name not in known:
        module = f"*/management/commands/{name}.py"
        return f"`manage.py {name}` has no {module} in the project or Django"
    return None


def check_uvicorn(argv):
    targets = [arg for arg in argv[1:] if ":" in arg and not arg.startswith("-")]
    if not targets:
        return "uvicorn is given no MODULE:ATTR"
    module, attr = targets[0].split(":", 1)
    base = ROOT.joinpath(*module.split("."))
    source = base.with_suffix(".py")
    if not source.is_file():
        source = base / "__init__.py"
    if not source.is_file():
        return f"uvicorn module {module} has no source file in the project"
    if not defines(source, attr):
        return f"{source.relative_to(ROOT)} does not define {attr}"
    return None


def check_celery(argv):
    app = option_value(argv, "-A", "--app")
    if not app:
        return "celery is started without -A/--app"
    source = ROOT / app.replace(".", "/") / "celery.py"
    if not source.is_file():
        return f"celery -A {app} needs {app}/celery.py"
    if not defines(source, "app"):
        return f"{app}/celery.py does not define app"
    return None


def check_command(argv):
    """What is wrong with the program argv starts, or None when it exists here."""
    program = Path(argv[0]).name if argv else ""
    if program in {"python", "python3"} and argv[1:2] == ["manage.py"]:
        return check_manage_py(argv)
    if program == "uvicorn":
        return check_uvicorn(argv)
    if program == "celery":
        return check_celery(argv)
    return f"runs {argv!r}, which this test cannot check"


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.partition("=")[::2] for item in env)
    return env


def mount_target(volume):
    if isinstance(volume, dict):  # long syntax
        return volume.get("target")
    parts = str(volume).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def test_compose_has_all_services():
    services = load_compose()["services"]
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"docker-compose.yml lacks services: {sorted(missing)}"


def test_compose_app_services_share_environment():
    services = app_services()
    assert services, "no service in docker-compose.yml builds the Paddock image"
    for name, svc in services.items():
        env = environment(svc)
        for key in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PADDOCK_DATA_DIR"):
            assert key in env, f"service {name} has no {key} in its environment"
        assert "@postgres:" in env["DATABASE_URL"], f"{name}: DATABASE_URL not postgres"
        assert "//redis:" in env["REDIS_URL"], f"{name}: REDIS_URL not on redis"
        assert ":?" in env["SECRET_KEY"], f"{name}: SECRET_KEY must be required"
        mounts = [mount_target(v) for v in svc.get("volumes", [])]
        data_dir = env["PADDOCK_DATA_DIR"]
        assert data_dir in mounts, f"{name}: PADDOCK_DATA_DIR {data_dir} not a volume"


def test_compose_depends_on_existing_services():
    services = load_compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or []
        for dep in deps:
            assert dep in services, f"service {name} depends on unknown service {dep}"
    for name in EXPECTED_SERVICES - {"postgres", "redis", "migrate"}:
        deps = services.get(name, {}).get("depends_on") or {}
        assert "migrate" in deps, f"service {name} may start before migrations ran"


def test_compose_commands_exist_in_project():
    services = app_services()
    problems = []
    for name, svc in services.items():
        if "command" not in svc:
            problems.append(f"service {name} has no command")
            continue
        problem = check_command(as_argv(svc["command"]))
        if problem:
            problems.append(f"service {name}: {problem}")
    assert not problems, "\n".join(problems)


def test_worker_consumes_default_task_queue():
    argv = as_argv(app_services()["worker"]["command"])
    if "run_worker" in argv:
        # The project's worker command builds -Q itself: the default queue plus every host's.
        source = (ROOT / "paddock" / "management" / "commands" / "run_worker.py").read_text()
        assert "CELERY_TASK_DEFAULT_QUEUE" in source and '"-Q"' in source
        return
    queues = option_value(argv, "-Q", "--queues")
    if queues is None:
        return  # the worker listens on the default queue, whatever it is called
    settings = (ROOT / "paddock" / "settings.py").read_text()
    pattern = r"^CELERY_TASK_DEFAULT_QUEUE\s*=\s*[\"']([^\"']+)"
    match = re.search(pattern, settings, re.MULTILINE)
    default = match.group(1) if match else "celery"
    msg = f"worker consumes {queues!r} but tasks go to {default!r} by default"
    assert default in queues.split(","), msg


def test_dockerfile_cmd_runs_the_web_server():
    cmd = dockerfile_cmd()
    problem = check_command(cmd)
    assert not problem, f"Dockerfile CMD: {problem}"
    web = as_argv(load_compose()["services"]["web"]["command"])
    assert cmd[0] == web[0] == "uvicorn", f"CMD {cmd} / web {web}: not both uvicorn"
    cmd_target = next(arg for arg in cmd[1:] if ":" in arg)
    web_target = next(arg for arg in web[1:] if ":" in arg)
    msg = f"Dockerfile CMD serves {cmd_target}, compose web serves {web_target}"
    assert cmd_target == web_target, msg


def referenced_scripts(path):
    return set(re.findall(r"\bscripts/[\w.-]+", path.read_text()))


def test_makefile_scripts_exist_and_are_executable():
    makefile = ROOT / "Makefile"
    assert makefile.is_file(), "Makefile is missing"
    seen, todo = set(), referenced_scripts(makefile)
    problems = []
    while todo:
        rel = todo.pop()
        seen.add(rel)
        path = ROOT / rel
        if not path.is_file():
            problems.append(f"{rel} is referenced but missing")
            continue
        if not os.access(path, os.X_OK):
            problems.append(f"{rel} is not executable")
        todo |= referenced_scripts(path) - seen
    missing = REQUIRED_SCRIPTS - seen
    assert not missing, f"not reachable from the Makefile: {sorted(missing)}"
    assert not problems, "\n".join(problems)


def test_makefile_has_targets():
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w.-]+)\s*:(?!=)", text, re.MULTILINE))
    wanted = {"venv", "demo", "test", "test-fast", "bench", "lint", "format", "clean"}
    assert not wanted - targets, f"Makefile lacks targets: {sorted(wanted - targets)}"


def test_shell_scripts_parse():
    scripts = [ROOT / rel for rel in sorted(REQUIRED_SCRIPTS)] + [ROOT / ".ci" / "run"]
    for script in scripts:
        assert script.is_file(), f"{script.relative_to(ROOT)} is missing"
        argv = ["bash", "-n", str(script)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{script.relative_to(ROOT)}: {result.stderr}"


def test_ci_runs_make_test():
    run = ROOT / ".ci" / "run"
    assert run.is_file(), ".ci/run is missing"
    assert os.access(run, os.X_OK), ".ci/run is not executable"
    lines = [line.split("#", 1)[0] for line in run.read_text().splitlines()]
    calls = [line for line in lines if re.match(r"\s*(exec\s+)?make\s+test\b", line)]
    assert calls, ".ci/run does not call `make test`"
