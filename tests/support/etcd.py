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


class EtcdServer:
    """One etcd process on fixed ports and data directory, which a test may stop and start again."""

    def __init__(self):
        binary = shutil.which("etcd") or ("/usr/bin/etcd" if shutil.os.path.exists("/usr/bin/etcd") else None)
        if binary is None:
            pytest.skip("etcd is not installed (Debian package etcd-server)")
        self.binary = binary
        self.client_port, self.peer_port = free_port(), free_port()
        self.data_dir = tempfile.mkdtemp(prefix="lcm-etcd-")
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.process = None

    def start(self) -> "EtcdServer":
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = subprocess.Popen(
            [self.binary, "--data-dir", self.data_dir, "--listen-client-urls", self.url, "--advertise-client-urls",
             self.url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"default={peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        probe = EtcdCoordinator(self.url)
        for _ in range(100):
            if probe.healthy():
                break
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def etcd_url():
    server = EtcdServer().start()
    yield server.url
    server.remove()
