"""`manage.py lcm_run`, the embedded default: it checks its ports before touching anything, and serves people the
friendly error pages (never Django's technical ones) while keeping its easy start."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.support.etcd import free_port

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.django_db
def test_a_port_in_use_is_refused_before_anything_is_touched():
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(CommandError, match=rf"port {port} on 127.0.0.1 for the web server \(--port\) is in use"):
            call_command("lcm_run", "--port", str(port), "--no-simulators", "--no-loops")
    assert not get_user_model().objects.exists()  # nothing seeded


def test_the_embedded_default_serves_friendly_error_pages_and_its_static_files(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "DJANGO_SETTINGS_MODULE")}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    server = subprocess.Popen(
        [sys.executable, "manage.py", "lcm_run", "--port", str(port), "--no-simulators", "--no-loops"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{base}/accounts/login/", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.3)
        missing = requests.get(f"{base}/no-such-page/", timeout=5)
        assert missing.status_code == 404
        assert "Using the URLconf" not in missing.text and "DEBUG = True" not in missing.text
        assert "Lablet Cloud Manager" in missing.text or "not found" in missing.text.lower()
        assert requests.get(f"{base}/static/lcm/lcm.css", timeout=5).status_code == 200
        assert requests.get(f"{base}/accounts/login/", timeout=5).status_code == 200  # the easy start still works
    finally:
        server.terminate()
        server.wait(timeout=20)
