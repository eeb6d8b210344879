"""docker-compose.yml mirrors the native launcher service for service (no Docker engine here: the file is
parsed and compared with what `lcm.tools.stack` runs)."""

import shlex
from pathlib import Path

import pytest
import yaml

from lcm.tools.stack import ROLE_COMMANDS, WIRED_ENV, Stack, StackConfig

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
# compose service -> launcher service
ROLES = {
    "django": "web",
    "celeryworker": "worker",
    "celerybeat": "beat",
    "watcher": "watcher",
    "simulators": "simulators",
    "etcd": "etcd",
}
APP_SERVICES = ("django", "celeryworker", "celerybeat", "watcher")
OPTIONAL_FLAGS = {"--zero-delay"}  # the launcher's switch for benchmarks and tests; compose uses LCM_SIM_ZERO_DELAY


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> Stack:
    return Stack(StackConfig(state_dir=str(tmp_path_factory.mktemp("stack"))))


def _argv(command) -> list[str]:
    """A compose command as argv; for `sh -c "a && b && exec c"` the exec'd part (c)."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if argv[:2] == ["sh", "-c"]:
        steps = [step.strip() for step in argv[2].split("&&")]
        return shlex.split(steps[-1].removeprefix("exec "))
    return argv


def _role_argv(argv: list[str]) -> list[str]:
    """Drop the interpreter the launcher runs Python tools with (`/…/python -m celery` → `celery`)."""
    if argv and Path(argv[0]).name.startswith("python") and argv[1:2] == ["-m"]:
        return argv[2:]
    if argv and Path(argv[0]).name.startswith("python"):
        return ["python", *argv[1:]]
    if argv and Path(argv[0]).name == "etcd":
        return ["etcd", *argv[1:]]
    return argv


def _flags(argv: list[str]) -> set[str]:
    return {a for a in argv if a.startswith("--")} - OPTIONAL_FLAGS


def test_the_service_set_is_the_production_process_set(compose):
    assert set(compose["services"]) == {*ROLES, "postgres", "redis"}
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"


@pytest.mark.parametrize("service", sorted(ROLES))
def test_each_command_is_the_launchers(compose, launcher, service):
    role = ROLES[service]
    ours = _role_argv(launcher.command(role))
    theirs = _argv(compose["services"][service]["command"])
    assert theirs[: len(ROLE_COMMANDS[role])] == ROLE_COMMANDS[role]
    assert ours[: len(ROLE_COMMANDS[role])] == ROLE_COMMANDS[role]
    assert sorted(_flags(theirs)) == sorted(_flags(ours)), f"{service}: compose (left) vs the launcher (right)"


def test_django_migrates_and_collects_static_first_like_the_launcher(compose):
    script = compose["services"]["django"]["command"][2]
    steps = [step.strip() for step in script.split("&&")]
    assert steps[:2] == ["python manage.py migrate --noinput", "python manage.py collectstatic --noinput"]


def test_every_lcm_role_gets_the_launchers_wiring(compose, launcher):
    for service in APP_SERVICES:
        environment = compose["services"][service]["environment"]
        missing = [name for name in WIRED_ENV if name not in environment]
        assert not missing, f"{service} lacks {missing}"
        assert environment["LCM_SIM_WEBHOOK_URL"].endswith("/api/events")
    simulators = compose["services"]["simulators"]["environment"]
    for name in ("LCM_SIM_WEBHOOK_URL", "LCM_WEBHOOK_SECRET"):
        assert name in simulators and name in launcher.env
    assert all(name in launcher.env for name in WIRED_ENV)


def test_secrets_are_required_not_defaulted(compose):
    environment = compose["services"]["django"]["environment"]
    for name in ("DJANGO_SECRET_KEY", "LCM_INTERNAL_API_KEY", "LCM_WEBHOOK_SECRET"):
        assert ":?" in environment[name], f"{name} must be required (${{{name}:?...}})"
    assert environment["DJANGO_DEBUG"] == "0"
