"""Start the simulators together (SPEC §1, §12): CML, LDS, Grading Engine, moto (EC2, CloudWatch) and the
OpenID Connect provider.

`start_simulators(...)` serves each one from a thread of this process (`in_process=True`: the
embedded default and tests) or runs them all in one child process (`python -m simulators.runner`,
which prints one JSON line with the URLs once they listen). Either way it returns a
`SimulatorsHandle` with `.urls` and `.stop()`. `manage.py lcm_simulators` runs them in the
foreground. This module needs no Django: the command passes the settings in.

Their control API (`/_sim/...`) demands the handle's `token` in `X-Sim-Token`: the caller's
`control_token`, else `LCM_SIM_TOKEN`, else a generated one (a child process gets it in its environment).
"""

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from simulators.common import ServerThread

SIMULATOR_NAMES = ("cml", "lds", "grading", "moto", "oidc")
DEFAULT_PORTS = {"cml": 8101, "lds": 8102, "grading": 8103, "moto": 8104, "oidc": 8105}
TOKEN_ENV = "LCM_SIM_TOKEN"
STARTUP_TIMEOUT = 60.0  # seconds a child process may take to listen (imports moto)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


# `ServerThread` binds its socket first, so a port in use raises OSError instead of exiting.
ListeningServerThread = ServerThread


class SimulatorStartError(Exception):
    """A simulator could not start (not importable, port in use, child process died); one-line message."""


class SimulatorsHandle:
    """Running simulators: `urls` by name, the control API's `token`, the simulator objects (in-process only)
    and `stop()`."""

    def __init__(
        self,
        urls: dict[str, str],
        simulators: dict | None = None,
        servers: dict | None = None,
        process: subprocess.Popen | None = None,
        log=None,
        token: str = "",
    ):
        self.urls = urls
        self.token = token
        self.simulators = simulators or {}
        self.servers = servers or {}
        self.process = process
        self.log = log  # the child process's stderr file

    def stop(self) -> None:
        """Stop every server (or the child process); safe to call twice."""
        for server in self.servers.values():
            server.stop()
        self.servers = {}
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def __enter__(self) -> "SimulatorsHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_simulators(
    host: str = "127.0.0.1",
    *,
    cml_port: int = DEFAULT_PORTS["cml"],
    lds_port: int = DEFAULT_PORTS["lds"],
    grading_port: int = DEFAULT_PORTS["grading"],
    moto_port: int = DEFAULT_PORTS["moto"],
    oidc_port: int = DEFAULT_PORTS["oidc"],
    zero_delay: bool = False,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    seed: int | None = None,
    timings: dict[str, dict] | None = None,
    only: list[str] | tuple[str, ...] | None = None,
    in_process: bool = True,
    control_token: str | None = None,
) -> SimulatorsHandle:
    """Start the simulators (all, or `only` those named) on `host`; port 0 picks a free port.

    `timings` maps a simulator name to its timing overrides; `control_token` is what their control API
    demands (default: `LCM_SIM_TOKEN`, else generated; on the handle as `.token`). Raises
    `SimulatorStartError` and leaves nothing running when any of them cannot start.
    """
    names = _selected(only)
    ports = {"cml": cml_port, "lds": lds_port, "grading": grading_port, "moto": moto_port, "oidc": oidc_port}
    token = control_token or os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    if not in_process:
        return _start_child(host, ports, names, zero_delay, webhook_url, webhook_secret, seed, token)
    simulators = {}
    for name in names:
        simulators[name] = _build(
            name,
            zero_delay=zero_delay,
            timings=(timings or {}).get(name),
            seed=seed,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            control_token=token,
        )
    servers: dict[str, ServerThread] = {}
    for name, simulator in simulators.items():
        try:
            servers[name] = ListeningServerThread(simulator.app, host, ports[name])
        except OSError as exc:
            for bound in servers.values():
                bound.server.server_close()
            reason = exc.strerror or str(exc)
            raise SimulatorStartError(
                f"cannot listen on {host}:{ports[name]} for the {name} simulator: {reason}"
            ) from None
    for server in servers.values():
        server.start()
    urls = {name: server.url for name, server in servers.items()}
    return SimulatorsHandle(urls, simulators, servers, token=token)


def _selected(only) -> list[str]:
    names = list(dict.fromkeys(only or SIMULATOR_NAMES))
    unknown = [name for name in names if name not in SIMULATOR_NAMES]
    if unknown:
        raise SimulatorStartError(f"unknown simulator {unknown[0]!r}: choose from {', '.join(SIMULATOR_NAMES)}")
    return names


def _build(name: str, *, zero_delay, timings, seed, webhook_url, webhook_secret, control_token):
    """One simulator object; the classes are imported here so a missing one fails only when asked for."""
    common = {"zero_delay": zero_delay, "timings": timings, "seed": seed, "control_token": control_token}
    webhook = {"webhook_url": webhook_url, "webhook_secret": webhook_secret}
    try:
        if name == "cml":
            from simulators.cml.app import CMLSimulator

            # LCM's workers find their virtual CML made on first contact (LCM never calls the control API).
            return CMLSimulator(**common, auto_workers=True)
        if name == "lds":
            from simulators.lds.app import LDSSimulator

            return LDSSimulator(**common, **webhook)
        if name == "grading":
            from simulators.grading.app import GradingSimulator

            return GradingSimulator(**common, **webhook)
        if name == "oidc":
            from simulators.oidc.app import OIDCSimulator

            return OIDCSimulator(**common)
        from simulators.moto_server import MotoSimulator

        return MotoSimulator(**common)
    except ImportError as exc:
        raise SimulatorStartError(f"the {name} simulator is not available: {exc}") from None


def _start_child(host, ports, names, zero_delay, webhook_url, webhook_secret, seed, token) -> SimulatorsHandle:
    """Run `python -m simulators.runner` and wait for its JSON line of URLs (or its one-line error)."""
    command = [sys.executable, "-m", "simulators.runner", "--host", host, "--only", ",".join(names)]
    for name in names:
        command += [f"--{name}-port", str(ports[name])]
    if zero_delay:
        command.append("--zero-delay")
    if webhook_url:
        command += ["--webhook-url", webhook_url]
    if seed is not None:
        command += ["--seed", str(seed)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    if webhook_secret:
        env["LCM_SIM_WEBHOOK_SECRET"] = webhook_secret  # not on the command line, where `ps` shows it
    env[TOKEN_ENV] = token
    # stderr goes to a file, not a pipe: nobody reads a pipe once the child runs, and a full one blocks it.
    errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by SimulatorsHandle.stop()
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
    line = _read_line(process, STARTUP_TIMEOUT)
    try:
        urls = json.loads(line)["urls"] if line else None
    except (ValueError, KeyError, TypeError):
        urls = None
    if urls is None:
        SimulatorsHandle({}, process=process).stop()
        errors.seek(0)
        lines = errors.read().strip().splitlines()
        errors.close()
        raise SimulatorStartError(lines[-1] if lines else "the simulators process exited without starting")
    threading.Thread(target=process.stdout.read, daemon=True).start()  # keep draining whatever else it prints
    return SimulatorsHandle(urls, process=process, log=errors, token=token)


def _read_line(process, timeout: float) -> str:
    """The child's first stdout line, or '' when it exits or stays silent for `timeout` seconds."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0].strip() if result else ""


def wait_for_signal(handle: SimulatorsHandle) -> None:
    """Block until SIGINT or SIGTERM, then stop the simulators (main thread only)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        handle.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m simulators.runner`: start, print `{"urls": {...}}` on one line, run until a signal."""
    parser = argparse.ArgumentParser(prog="python -m simulators.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    for name in SIMULATOR_NAMES:
        parser.add_argument(f"--{name}-port", type=int, default=DEFAULT_PORTS[name])
    parser.add_argument("--only", default=",".join(SIMULATOR_NAMES), help="comma-separated simulator names")
    parser.add_argument("--zero-delay", action="store_true")
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        handle = start_simulators(
            args.host,
            cml_port=args.cml_port,
            lds_port=args.lds_port,
            grading_port=args.grading_port,
            moto_port=args.moto_port,
            oidc_port=args.oidc_port,
            zero_delay=args.zero_delay,
            webhook_url=args.webhook_url,
            webhook_secret=os.environ.get("LCM_SIM_WEBHOOK_SECRET"),
            seed=args.seed,
            only=[name.strip() for name in args.only.split(",") if name.strip()],
        )
    except SimulatorStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"urls": handle.urls}), flush=True)
    wait_for_signal(handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
