"""`scripts/lcm-stack`: start the whole set from the command line, report it, stop it with nothing left behind."""

import json
import subprocess
from pathlib import Path

import pytest
from django.db import connection

from lcm.tools.processes import database_url_of, etcd_binary, free_ports, group_pids
from lcm.tools.stack import SERVICE_ORDER, Stack, StackConfig

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "scripts" / "lcm-stack"


def _run(*args, timeout=150) -> subprocess.CompletedProcess:
    return subprocess.run([str(LAUNCHER), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.django_db(transaction=True)
def test_start_status_stop_leave_no_process_behind(tmp_path):
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    state = tmp_path / "stack"
    web, etcd, peer, cml, lds, grading, moto = free_ports(7)
    started = _run(
        "start", "--state-dir", str(state), "--zero-delay",
        "--web-port", str(web), "--etcd-port", str(etcd), "--etcd-peer-port", str(peer),
        "--cml-port", str(cml), "--lds-port", str(lds), "--grading-port", str(grading), "--moto-port", str(moto),
        "--database-url", database_url_of(connection.settings_dict), "--broker-url", "redis://127.0.0.1:6379/12",
    )  # fmt: skip
    stack = Stack(StackConfig.load(state))
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        status = _run("status", "--state-dir", str(state), timeout=30)
        assert status.returncode == 0, status.stdout
        for name in SERVICE_ORDER:
            assert name in status.stdout
        pids = {pid for name in SERVICE_ORDER for pid in stack.pids(name)}
        leaders = {json.loads((state / f"{name}.pid").read_text())["pid"] for name in SERVICE_ORDER}
        assert len(pids) > len(leaders)  # gunicorn and Celery run children too
        secrets = _run("env", "--state-dir", str(state), timeout=30).stdout
        assert "DJANGO_SECRET_KEY=<set>" in secrets and f"127.0.0.1:{web}/api/events" in secrets
    finally:
        stopped = _run("stop", "--state-dir", str(state), timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in pids)
    assert not any(group_pids(leader) for leader in leaders)
    assert _run("status", "--state-dir", str(state), timeout=30).returncode == 3  # nothing running


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
