"""The native launcher: the production process set of SPEC §1 without Docker (command line: `scripts/lcm-stack`,
`lcm.tools.launcher`).

Starts, in order, and waits for each to be ready:

    etcd        `etcd` with its own data dir under the state dir, on chosen client/peer ports
    simulators  `manage.py lcm_simulators` (CML, LDS, Grading Engine, moto) in one process
    worker      `celery -A lcm worker`
    beat        `celery -A lcm beat` (schedule file in the state dir)
    watcher     `manage.py lcm_watch` (etcd change → reconcile now)
    web         `gunicorn lcm.wsgi` (pages, API, the CloudEvents webhook the simulators call)

after making sure PostgreSQL and Redis answer (started when they run on this machine and do not:
`scripts/ensure-postgres`, `redis-server --daemonize yes ...`; they are shared infrastructure and
are left running by `stop`), creating the database if it is missing, `migrate` and
`collectstatic`. Every process gets the same wiring (`DATABASE_URL`, `CELERY_BROKER_URL`,
`LCM_ETCD_ENDPOINTS`, the simulator URLs, `LCM_SIM_WEBHOOK_URL` → gunicorn's `/api/events`,
`PROMETHEUS_MULTIPROC_DIR` → `<state>/metrics`, emptied at start and removed at stop, so gunicorn's
`/metrics` adds up the series of every worker, Celery and watcher process, ...).

Each service runs in its own session (process group) with its log in `<state>/logs/<name>.log` and
its pid (plus the kernel's start time, so a recycled pid is never signalled) in `<state>/<name>.pid`.
`stop` sends SIGTERM to each service's leader (gunicorn and Celery shut their children down
themselves), waits, then SIGKILLs whatever is left of the group: nothing is orphaned. Because the
state dir holds the whole description (`stack.json`), `stop`/`status` work from another process.

Tests and benchmarks use `Stack` directly (free ports, a Redis DB number of their own, the test
database); `docker-compose.yml` mirrors `ROLE_COMMANDS` service for service.
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lcm.tools.processes import (
    PROJECT_ROOT,
    StackError,
    die_with_parent,
    ensure_database,
    ensure_postgres,
    ensure_redis,
    etcd_binary,
    free_ports,
    group_pids,
    http_ok,
    process_alive,
    process_cpu_seconds,
    process_start_time,
)

DEFAULT_STATE_DIR = PROJECT_ROOT / "var" / "stack"
SERVICE_ORDER = ("etcd", "simulators", "worker", "beat", "watcher", "web")
SIMULATORS = ("cml", "lds", "grading", "moto", "oidc")

# What each role runs (before its options); docker-compose.yml runs the same (tests/processes checks it).
ROLE_COMMANDS = {
    "etcd": ["etcd"],
    "simulators": ["python", "manage.py", "lcm_simulators"],
    "worker": ["celery", "-A", "lcm", "worker"],
    "beat": ["celery", "-A", "lcm", "beat"],
    "watcher": ["python", "manage.py", "lcm_watch"],
    "web": ["gunicorn", "lcm.wsgi"],
}
# The environment every LCM process is wired with (values differ between the launcher and compose).
WIRED_ENV = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "LCM_ETCD_ENDPOINTS",
    "LCM_LDS_BASE_URL",
    "LCM_GRADING_BASE_URL",
    "LCM_CML_SIMULATOR_URL",
    "LCM_AWS_ENDPOINT_URL",
    "LCM_SIM_WEBHOOK_URL",
    "LCM_WEBHOOK_SECRET",
    "DJANGO_SECRET_KEY",
    "LCM_INTERNAL_API_KEY",
    "DJANGO_DEBUG",
    "PROMETHEUS_MULTIPROC_DIR",
)
# LCM_SIM_TOKEN: the simulators' control API token (SPEC §12), for whoever drives them (tests, benchmarks).
GENERATED_SECRETS = ("DJANGO_SECRET_KEY", "LCM_INTERNAL_API_KEY", "LCM_WEBHOOK_SECRET", "LCM_SIM_TOKEN")


@dataclass
class StackConfig:
    """Everything that tells one stack from another: ports, state dir, database, broker DB number."""

    state_dir: str = str(DEFAULT_STATE_DIR)
    host: str = "127.0.0.1"
    web_port: int = 8000
    etcd_port: int = 2379
    etcd_peer_port: int = 2380
    cml_port: int = 8101
    lds_port: int = 8102
    grading_port: int = 8103
    moto_port: int = 8104
    oidc_port: int = 8105
    database_url: str = "postgres://postgres@127.0.0.1:5432/lcm"
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Prefork: a thread pool shares one interpreter (one core at most, the GIL) and on 2 cores made the
    # worker the bottleneck of a burst; 4 processes also overlap the reconcilers' HTTP waits
    # (bench_lifecycle, 400-session burst to READY: threads x4 32 s, prefork x2 37 s, prefork x4 26 s).
    worker_pool: str = "prefork"
    worker_concurrency: int = 4
    web_workers: int = 2
    services: tuple = SERVICE_ORDER
    zero_delay: bool = False
    # Persistent DB connections (seconds) unless the URL says otherwise: a reconcile task or a webhook
    # call then reuses its thread's connection instead of a new PostgreSQL backend each time.
    conn_max_age: int = 60
    migrate: bool = True
    collectstatic: bool = True
    ensure_infrastructure: bool = True
    env: dict = field(default_factory=dict)
    ready_timeout: float = 60.0
    stop_timeout: float = 10.0

    def __post_init__(self):
        self.services = tuple(name for name in SERVICE_ORDER if name in self.services)
        if "PYTHONPATH" in self.env:
            raise StackError("PYTHONPATH is managed by the launcher")

    @classmethod
    def on_free_ports(cls, **fields) -> "StackConfig":
        """A config whose every port is one free right now (tests and benchmarks run beside other stacks)."""
        names = (
            "web_port", "etcd_port", "etcd_peer_port", "cml_port", "lds_port", "grading_port", "moto_port", "oidc_port"
        )  # fmt: skip
        return cls(**dict(zip(names, free_ports(len(names)), strict=True)) | fields)

    @classmethod
    def load(cls, state_dir) -> "StackConfig":
        path = Path(state_dir) / "stack.json"
        if not path.exists():
            raise StackError(f"no stack described in {path} (start one first)")
        data = json.loads(path.read_text())
        data["services"] = tuple(data.get("services") or SERVICE_ORDER)
        return cls(**data)


@dataclass
class Managed:
    """One running service: its leader pid and the kernel start time that identifies it."""

    name: str
    pid: int
    start_time: int
    process: subprocess.Popen | None = None


class Stack:
    """Start, inspect and stop the process set of one `StackConfig`."""

    def __init__(self, config: StackConfig | None = None, *, die_with_parent: bool = False):
        self.config = config or StackConfig()
        self.state_dir = Path(self.config.state_dir).resolve()
        self.die_with_parent = die_with_parent  # tests: a killed pytest takes the stack with it
        self.managed: dict[str, Managed] = {}
        self._env: dict | None = None

    # -- wiring --------------------------------------------------------------------------

    @property
    def urls(self) -> dict[str, str]:
        c = self.config
        return {
            "web": f"http://{c.host}:{c.web_port}",
            "etcd": f"http://{c.host}:{c.etcd_port}",
            "cml": f"http://{c.host}:{c.cml_port}",
            "lds": f"http://{c.host}:{c.lds_port}",
            "grading": f"http://{c.host}:{c.grading_port}",
            "moto": f"http://{c.host}:{c.moto_port}",
            "oidc": f"http://{c.host}:{c.oidc_port}",
        }

    @property
    def database_url(self) -> str:
        """The configured URL with `conn_max_age` added when it does not set one."""
        url = self.config.database_url
        if self.config.conn_max_age and "conn_max_age" not in url and url.startswith(("postgres", "pgsql")):
            url += ("&" if "?" in url else "?") + f"conn_max_age={self.config.conn_max_age}"
        return url

    @property
    def env(self) -> dict[str, str]:
        """The environment of every process: the caller's, the stack's wiring, then `config.env`."""
        if self._env is None:
            c, urls = self.config, self.urls
            env = dict(os.environ)
            env.update(
                {
                    "PYTHONPATH": str(PROJECT_ROOT),
                    "PYTHONUNBUFFERED": "1",
                    "DJANGO_SETTINGS_MODULE": "lcm.settings",
                    "DATABASE_URL": self.database_url,
                    "CELERY_BROKER_URL": c.broker_url,
                    "LCM_ETCD_ENDPOINTS": urls["etcd"] if "etcd" in c.services else "",
                }
            )
            if "simulators" in c.services:
                env.update(
                    {
                        "LCM_SIM_HOST": c.host,
                        "LCM_SIM_CML_PORT": str(c.cml_port),
                        "LCM_SIM_LDS_PORT": str(c.lds_port),
                        "LCM_SIM_GRADING_PORT": str(c.grading_port),
                        "LCM_SIM_MOTO_PORT": str(c.moto_port),
                        "LCM_SIM_OIDC_PORT": str(c.oidc_port),
                        "LCM_SIM_ZERO_DELAY": "1" if c.zero_delay else env.get("LCM_SIM_ZERO_DELAY", "0"),
                        "LCM_SIM_WEBHOOK_URL": f"{urls['web']}/api/events",
                        "LCM_CML_SIMULATOR_URL": urls["cml"],
                        "LCM_LDS_BASE_URL": urls["lds"],
                        "LCM_GRADING_BASE_URL": urls["grading"],
                        "LCM_AWS_ENDPOINT_URL": urls["moto"],
                    }
                )
            # Production settings (DEBUG off, whitenoise); the secrets it then demands are generated once
            # per state dir unless the caller provides them. Plain-HTTP cookies on a loopback address.
            env.setdefault("DJANGO_DEBUG", "0")
            if c.host in ("127.0.0.1", "localhost", "::1"):
                env.setdefault("DJANGO_SECURE_COOKIES", "0")
            for name, value in self._secrets().items():
                env.setdefault(name, value)
            env.update({k: str(v) for k, v in c.env.items()})
            # Metrics (SPEC §11): every process writes its series into one directory, emptied at each start;
            # gunicorn's /metrics adds them up. Turned off with LCM_METRICS_ENABLED=0 (then no directory).
            if env.get("LCM_METRICS_ENABLED", "1").lower() in ("0", "false", "no", "off"):
                env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            else:
                env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
            self._env = env
        return self._env

    @property
    def metrics_dir(self) -> Path:
        """Where the processes keep their Prometheus multiprocess files (`PROMETHEUS_MULTIPROC_DIR`)."""
        return self.state_dir / "metrics"

    def _fresh_metrics_dir(self) -> None:
        """An empty metrics directory: series of processes from an earlier start must not be added to these."""
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        if "PROMETHEUS_MULTIPROC_DIR" in self.env:
            self.metrics_dir.mkdir(parents=True)

    def _secrets(self) -> dict[str, str]:
        path = self.state_dir / "secrets.json"
        values = json.loads(path.read_text()) if path.exists() else {}
        missing = [name for name in GENERATED_SECRETS if name not in values]
        if missing:  # a new state dir, or one from before a secret was added
            values |= {name: secrets.token_urlsafe(32) for name in missing}
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(json.dumps(values))
        return values

    def command(self, name: str) -> list[str]:
        """The argv of one service (the role command of `ROLE_COMMANDS` with this stack's options)."""
        c, python, state = self.config, sys.executable, self.state_dir
        if name == "etcd":
            peer = f"http://{c.host}:{c.etcd_peer_port}"
            return [
                etcd_binary() or "etcd",
                "--name", "lcm",
                "--data-dir", str(state / "etcd"),
                "--listen-client-urls", self.urls["etcd"],
                "--advertise-client-urls", self.urls["etcd"],
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"lcm={peer}",
                "--log-level", "warn",
            ]  # fmt: skip
        if name == "simulators":
            command = [python, "manage.py", "lcm_simulators", "--json"]
            return command + (["--zero-delay"] if c.zero_delay else [])
        if name == "worker":
            return [
                python, "-m", "celery", "-A", "lcm", "worker",
                "--pool", c.worker_pool,
                "--concurrency", str(c.worker_concurrency),
                "--hostname", f"lcm-{c.web_port}@%h",
                "--loglevel", "INFO",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]  # fmt: skip
        if name == "beat":
            return [
                python, "-m", "celery", "-A", "lcm", "beat",
                "--schedule", str(state / "celerybeat-schedule"),
                "--loglevel", "INFO",
            ]  # fmt: skip
        if name == "watcher":
            return [python, "manage.py", "lcm_watch"]
        if name == "web":
            return [
                python, "-m", "gunicorn", "lcm.wsgi",
                "--bind", f"{c.host}:{c.web_port}",
                "--workers", str(c.web_workers),
                "--graceful-timeout", "5",
                "--timeout", "60",
                "--no-control-socket",
            ]  # fmt: skip
        raise StackError(f"unknown service {name!r}; choose from {', '.join(SERVICE_ORDER)}")

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> "Stack":
        """Prepare infrastructure and the database, then start the services (etcd first, the rest together)."""
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._check_not_running()
        (self.state_dir / "stack.json").write_text(json.dumps(asdict(self.config), indent=2))
        self._fresh_metrics_dir()
        try:
            if self.config.ensure_infrastructure:
                ensure_postgres(self.config.database_url)
                ensure_redis(self.config.broker_url)
                ensure_database(self.config.database_url)
            if self.config.migrate:
                self._manage("migrate", "--noinput")
            if self.config.collectstatic:
                self._manage("collectstatic", "--noinput")
            # The watcher needs etcd; nothing else waits for another service, so the rest start at once.
            first = [name for name in self.config.services if name == "etcd"]
            rest = [name for name in self.config.services if name != "etcd"]
            for group in (first, rest):
                self._wait_ready({name: self._spawn(name) for name in group})
        except BaseException:
            self.stop()
            raise
        return self

    def start_service(self, name: str) -> Managed:
        """Start one service and wait until it is ready (raises StackError with its log's tail)."""
        started = self._spawn(name)
        try:
            self._wait_ready({name: started})
        except StackError:
            self.stop_service(name)
            raise
        return started[0]

    def _spawn(self, name: str) -> tuple[Managed, int]:
        """Start one service's process in its own session; returns it and where its log began."""
        if name == "etcd" and etcd_binary() is None:
            raise StackError("etcd is not installed (Debian package etcd-server)")
        log_path = self.log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed right after the fork
        command, preexec = self.command(name), None
        if self.die_with_parent:
            # `setpriv` sets the parent-death signal and execs the command, so no Python code runs between
            # fork and exec: a `preexec_fn` forces a plain fork(), and in a parent with live gRPC threads
            # (an etcd client) gRPC's fork handlers can abort the child before it execs.
            setpriv = shutil.which("setpriv")
            if setpriv:
                command = [setpriv, "--pdeathsig", "TERM", "--", *command]
            else:
                preexec = die_with_parent
        try:
            process = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        finally:
            log.close()
        managed = Managed(name, process.pid, process_start_time(process.pid) or 0, process)
        self.managed[name] = managed
        self._pid_file(name).write_text(json.dumps({"pid": managed.pid, "start_time": managed.start_time}))
        return managed, log_offset

    def stop(self) -> None:
        """Stop every service of this stack (started here or named by pid files): the LCM processes first,
        then the simulators and etcd they talk to; each phase in parallel."""
        self.stop_services(["web", "watcher", "beat", "worker"])
        self.stop_services(["simulators", "etcd"])
        shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def stop_service(self, name: str, *, timeout: float | None = None) -> bool:
        """Stop one service; True when it was running."""
        return bool(self.stop_services([name], timeout=timeout))

    def stop_services(self, names, *, timeout: float | None = None) -> list[str]:
        """SIGTERM each leader, wait for the groups to end, SIGKILL what is left; returns the names stopped."""
        running = []
        for name in names:
            managed = self._running(name)
            self.managed.pop(name, None)
            if managed is None:
                self._pid_file(name).unlink(missing_ok=True)
                continue
            running.append(managed)
            # Only the leader: gunicorn and Celery stop their own children (a signal to each would race).
            with contextlib.suppress(ProcessLookupError):
                os.kill(managed.pid, signal.SIGTERM)
        deadline = time.monotonic() + (self.config.stop_timeout if timeout is None else timeout)
        while running and time.monotonic() < deadline:
            for managed in running:
                _reap(managed)
            if not any(group_pids(managed.pid) for managed in running):
                break
            time.sleep(0.05)
        for managed in running:
            self._kill_group(managed)
            self._pid_file(managed.name).unlink(missing_ok=True)
        return [managed.name for managed in running]

    def kill_service(self, name: str) -> bool:
        """SIGKILL a service's whole group at once (a crash: no shutdown code runs)."""
        managed = self._running(name)
        self.managed.pop(name, None)
        if managed is None:
            return False
        self._kill_group(managed)
        self._pid_file(name).unlink(missing_ok=True)
        return True

    def status(self) -> dict[str, dict]:
        """Per configured service: running or not, its pid and its group's CPU seconds."""
        result = {}
        for name in self.config.services:
            managed = self._running(name)
            result[name] = {
                "running": managed is not None,
                "pid": managed.pid if managed else None,
                "cpu_seconds": round(self.cpu_seconds(name), 2) if managed else None,
                "log": str(self.log_path(name)),
            }
        return result

    def pids(self, name: str) -> list[int]:
        managed = self._running(name)
        return group_pids(managed.pid) if managed else []

    def cpu_seconds(self, name: str) -> float:
        """user+system CPU of the service's processes, including children they have reaped."""
        return sum(process_cpu_seconds(pid) for pid in self.pids(name))

    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"

    def _running(self, name: str) -> Managed | None:
        """The live service `name` (from this object or its pid file), or None."""
        managed = self.managed.get(name)
        if managed is None:
            try:
                data = json.loads(self._pid_file(name).read_text())
                managed = Managed(name, int(data["pid"]), int(data["start_time"]))
            except (OSError, ValueError, KeyError):
                return None
        _reap(managed)
        if process_start_time(managed.pid) != managed.start_time or not process_alive(managed.pid):
            # The leader is gone (or its pid was recycled); its group may still have members.
            if group_pids(managed.pid) and managed.start_time:
                return managed
            return None
        return managed

    def _kill_group(self, managed: Managed) -> None:
        for _ in range(50):
            if not group_pids(managed.pid):
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(managed.pid, signal.SIGKILL)
            _reap(managed)
            time.sleep(0.02)
        _reap(managed, block=True)

    def _check_not_running(self) -> None:
        running = [name for name in SERVICE_ORDER if self._running(name)]
        if running:
            raise StackError(f"a stack is already running from {self.state_dir} ({', '.join(running)}); stop it first")

    def _manage(self, *args: str) -> None:
        """Run a `manage.py` command to completion (migrate, collectstatic); its output goes to a log."""
        with open(self.log_path("manage"), "ab") as log:
            code = subprocess.call(
                [sys.executable, "manage.py", *args], cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=log
            )
        if code != 0:
            raise StackError(f"manage.py {' '.join(args)} failed (exit {code}):\n{self.log_tail('manage')}")

    def _wait_ready(self, started: dict[str, tuple[Managed, int]]) -> None:
        """Wait until every started service is ready; StackError names the first that died or timed out."""
        deadline = time.monotonic() + self.config.ready_timeout
        pending = {name: self._readiness(name, offset) for name, (_managed, offset) in started.items()}
        while pending:
            for name in list(pending):
                process = started[name][0].process
                if process.poll() is not None:
                    raise StackError(f"{name} exited with {process.returncode} while starting:\n{self.log_tail(name)}")
                if pending[name]():
                    del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                name = next(iter(pending))
                raise StackError(
                    f"{name} was not ready after {self.config.ready_timeout:.0f} s (log {self.log_path(name)}):\n"
                    f"{self.log_tail(name)}"
                )
            time.sleep(0.1)

    def _readiness(self, name: str, log_offset: int):
        """A check that turns true once the service serves (HTTP probe, or its log says so since `log_offset`)."""
        urls = self.urls
        if name == "etcd":
            return lambda: http_ok(f"{urls['etcd']}/health")
        if name == "simulators":
            return lambda: all(http_ok(f"{urls[sim]}/_sim/health") for sim in SIMULATORS)
        if name == "web":
            return lambda: http_ok(f"{urls['web']}/readyz")
        marker = {"worker": " ready.", "beat": "beat: Starting", "watcher": "watching "}[name].encode()

        def logged() -> bool:
            with open(self.log_path(name), "rb") as log:
                log.seek(log_offset)
                return marker in log.read()

        return logged


def _reap(managed: Managed, block: bool = False) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    if managed.process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            managed.process.wait(timeout=5 if block else 0)
