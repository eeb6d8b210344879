"""A real etcd for the tests that need one: Debian's `etcd-server`, started on free ports per test module.

`etcd_url` is registered for every test by `tests/conftest.py`; without the binary it skips (a failure in CI).
"""

import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from lcm.coordination import EtcdCoordinator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def etcd_url():
    binary = shutil.which("etcd") or ("/usr/bin/etcd" if shutil.os.path.exists("/usr/bin/etcd") else None)
    if binary is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    client_port, peer_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="lcm-etcd-")
    url = f"http://127.0.0.1:{client_port}"
    process = subprocess.Popen(
        [binary, "--data-dir", data_dir, "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}", "--initial-advertise-peer-urls",
         f"http://127.0.0.1:{peer_port}", "--initial-cluster", f"default=http://127.0.0.1:{peer_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    coordinator = EtcdCoordinator(url)
    for _ in range(100):
        if coordinator.healthy():
            break
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)
    shutil.rmtree(data_dir, ignore_errors=True)
