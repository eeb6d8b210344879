"""`scripts/lcm-stack`: the command line of the native launcher (`lcm.tools.stack`).

python -m lcm.tools.launcher start|run|stop|status|restart-service|env [options]
"""

import argparse
import os
import signal
import sys
import time

from lcm.tools.stack import (
    DEFAULT_STATE_DIR,
    GENERATED_SECRETS,
    SERVICE_ORDER,
    WIRED_ENV,
    Stack,
    StackConfig,
    StackError,
)


def _config_from_args(args) -> StackConfig:
    config = StackConfig(state_dir=args.state_dir)
    for name in (
        "host", "web_port", "etcd_port", "etcd_peer_port", "cml_port", "lds_port", "grading_port", "moto_port",
        "database_url", "broker_url", "worker_pool", "worker_concurrency", "web_workers",
    ):  # fmt: skip
        value = getattr(args, name, None)
        if value is not None:
            setattr(config, name, value)
    config.zero_delay = bool(args.zero_delay)
    skip = set(args.without or [])
    config.services = tuple(name for name in SERVICE_ORDER if name not in skip)
    config.env = dict(item.split("=", 1) for item in args.env or [])
    return config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/lcm-stack",
        description="Start, inspect or stop LCM's production process set natively (SPEC §1).",
    )
    parser.add_argument("action", choices=["start", "run", "stop", "status", "restart-service", "env"])
    parser.add_argument("service", nargs="?", help="the service for restart-service")
    parser.add_argument("--state-dir", default=os.environ.get("LCM_STACK_DIR", str(DEFAULT_STATE_DIR)))
    parser.add_argument("--host")
    for name in ("web", "etcd", "etcd-peer", "cml", "lds", "grading", "moto"):
        parser.add_argument(f"--{name}-port", type=int)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or None)
    parser.add_argument("--broker-url", default=os.environ.get("CELERY_BROKER_URL") or None)
    parser.add_argument("--worker-pool", choices=["threads", "prefork", "solo"])
    parser.add_argument("--worker-concurrency", type=int)
    parser.add_argument("--web-workers", type=int)
    parser.add_argument("--zero-delay", action="store_true", help="simulators answer without simulated waiting")
    parser.add_argument("--without", action="append", choices=SERVICE_ORDER, help="leave a service out (repeatable)")
    parser.add_argument("--env", action="append", metavar="NAME=VALUE", help="extra environment (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action in ("start", "run"):
            return _start(args)
        return _act(Stack(StackConfig.load(args.state_dir)), args)
    except StackError as exc:
        print(f"lcm-stack: {exc}", file=sys.stderr)
        return 1


def _start(args) -> int:
    """`start` (return once every service is ready) or `run` (stay in the foreground until a signal)."""
    stack = Stack(_config_from_args(args)).start()
    _print_status(stack)
    if args.action == "start":
        return 0
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    print("running; Ctrl-C stops every service", flush=True)
    while not stop:
        time.sleep(0.5)
    stack.stop()
    return 0


def _act(stack: Stack, args) -> int:
    """`stop`, `status`, `env` or `restart-service` on the stack described in the state dir."""
    if args.action == "stop":
        stack.stop()
        print(f"stopped the stack of {stack.state_dir}")
    elif args.action == "status":
        _print_status(stack)
        return 0 if all(s["running"] for s in stack.status().values()) else 3
    elif args.action == "env":
        for name in WIRED_ENV:
            value = stack.env.get(name, "")
            print(f"{name}={'<set>' if name in GENERATED_SECRETS and value else value}")
    elif args.action == "restart-service":
        if args.service not in stack.config.services:
            raise StackError(f"name a service of this stack: {', '.join(stack.config.services)}")
        stack.stop_service(args.service)
        stack.start_service(args.service)
        print(f"{args.service} restarted")
    return 0


def _print_status(stack: Stack) -> None:
    urls = stack.urls
    for name, state in stack.status().items():
        where = {"web": urls["web"], "etcd": urls["etcd"], "simulators": urls["cml"] + " …"}.get(name, "")
        running = f"running pid {state['pid']}" if state["running"] else "stopped"
        print(f"{name:<11} {running:<20} {where}")
    print(f"state dir   {stack.state_dir} (logs in logs/)")


if __name__ == "__main__":
    sys.exit(main())
