"""Processes and local infrastructure for the launcher and the benchmarks: /proc readings (start time,
process group, CPU seconds), free ports, the etcd binary, and making sure PostgreSQL, Redis and a
database exist (`ensure_*`). Standard library only, besides psycopg and redis where they are needed.
"""

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlparse, urlunparse

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


class StackError(Exception):
    """A service could not start (or infrastructure is missing); the message says which and why."""


# --- processes --------------------------------------------------------------------------


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3 onwards), or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


def process_alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(int(entry))
        if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def process_cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of one process, in seconds (0 when it is gone)."""
    fields = stat_fields(pid)
    if not fields:
        return 0.0
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def etcd_binary() -> str | None:
    found = shutil.which("etcd")
    if found:
        return found
    return "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free right now (all held open while choosing, so none repeats)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback services
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "")


def ensure_postgres(database_url: str) -> None:
    """PostgreSQL answers; a local one is started with `scripts/ensure-postgres` when it does not."""
    parsed = urlparse(database_url)
    if not parsed.scheme.startswith(("postgres", "pgsql")):
        return
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 5432
    if reachable(host, port):
        return
    ensure = PROJECT_ROOT / "scripts" / "ensure-postgres"
    if host in LOCAL_HOSTS and port == 5432 and subprocess.call([str(ensure)]) == 0:
        return
    raise StackError(f"PostgreSQL does not answer on {host}:{port}")


def ensure_redis(broker_url: str) -> None:
    """Redis answers; a local one is started (daemonized, no persistence) when it does not."""
    parsed = urlparse(broker_url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if reachable(host, port):
        return
    if host in LOCAL_HOSTS and shutil.which("redis-server"):
        command = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port)]
        subprocess.call([*command, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        for _ in range(50):
            if reachable(host, port):
                return
            time.sleep(0.1)
    raise StackError(f"Redis does not answer on {host}:{port} (install redis-server or set the broker URL)")


def ensure_database(database_url: str) -> None:
    """Create the PostgreSQL database named in the URL when it does not exist yet."""
    parsed = urlparse(database_url)
    if not parsed.scheme.startswith(("postgres", "pgsql")):
        return
    import psycopg

    name = parsed.path.lstrip("/")
    conninfo = urlunparse(parsed._replace(scheme="postgresql", query=""))
    try:
        psycopg.connect(conninfo, connect_timeout=5).close()
        return
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise StackError(f"cannot connect to {name}: {str(exc).strip()}") from None
    maintenance = urlunparse(parsed._replace(scheme="postgresql", path="/postgres", query=""))
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def database_url_of(settings_dict: dict) -> str:
    """A PostgreSQL URL for Django database settings (to hand a test or scratch database to the stack)."""
    user = quote(settings_dict.get("USER") or "postgres", safe="")
    password = f":{quote(settings_dict['PASSWORD'], safe='')}" if settings_dict.get("PASSWORD") else ""
    host, port = settings_dict.get("HOST") or "127.0.0.1", settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


def flush_redis_db(broker_url: str) -> None:
    """Empty the broker's Redis database (tests: no message left over from an earlier run)."""
    import redis

    redis.Redis.from_url(broker_url).flushdb()
