"""The simulators' control API requires their token (SPEC §12, issue 18: any local process could read the CML
password and drive sessions): `/_sim/...` (and moto's own `/moto-api/`) answer 401 without `X-Sim-Token`,
with a wrong one, and serve it with the right one; the readiness probe stays open."""

import json
from io import StringIO

import pytest
import requests
from django.core.management import call_command

from simulators.runner import start_simulators
from tests.support.simulators import CONTROL_HEADERS, SIM_TOKEN

# One control route per simulator that gives away or changes something.
GUARDED = {
    "cml": ("POST", "/_sim/workers", {"name": "w1"}),
    "lds": ("GET", "/_sim/state", None),
    "grading": ("POST", "/_sim/grading/outcomes", {"outcome": "hang"}),
    "moto": ("POST", "/_sim/reset", None),
    "oidc": ("GET", "/_sim/users", None),
}


@pytest.fixture(scope="module")
def served():
    handle = start_simulators(
        "127.0.0.1",
        cml_port=0,
        lds_port=0,
        grading_port=0,
        moto_port=0,
        oidc_port=0,
        zero_delay=True,
        webhook_url="",
        control_token=SIM_TOKEN,
    )
    yield handle
    handle.stop()


@pytest.mark.parametrize("name", sorted(GUARDED))
def test_a_control_request_without_the_token_is_refused(served, name):
    method, path, body = GUARDED[name]
    url = served.urls[name] + path
    missing = requests.request(method, url, json=body, timeout=5)
    wrong = requests.request(method, url, json=body, headers={"X-Sim-Token": "guess"}, timeout=5)
    right = requests.request(method, url, json=body, headers=CONTROL_HEADERS, timeout=5)
    assert missing.status_code == wrong.status_code == 401, (missing.text, wrong.text)
    assert "X-Sim-Token" in missing.json()["description"]
    assert right.status_code < 300, right.text


def test_the_cml_password_is_not_handed_out_without_the_token(served):
    answer = requests.post(f"{served.urls['cml']}/_sim/workers", json={"name": "peek"}, timeout=5)
    assert answer.status_code == 401 and "password" not in answer.text


def test_moto_s_own_control_api_needs_the_token_too(served):
    url = f"{served.urls['moto']}/moto-api/reset"
    assert requests.post(url, timeout=5).status_code == 401
    assert requests.post(url, headers=CONTROL_HEADERS, timeout=10).status_code == 200


def test_the_readiness_probe_stays_open(served):
    for url in served.urls.values():
        assert requests.get(f"{url}/_sim/health", timeout=5).json()["ok"] is True


def test_without_a_given_token_one_is_generated_never_open(monkeypatch):
    monkeypatch.delenv("LCM_SIM_TOKEN", raising=False)
    handle = start_simulators("127.0.0.1", oidc_port=0, only=["oidc"])
    try:
        assert len(handle.token) >= 20
        assert requests.get(f"{handle.urls['oidc']}/_sim/state", timeout=5).status_code == 401
        ok = requests.get(f"{handle.urls['oidc']}/_sim/state", headers={"X-Sim-Token": handle.token}, timeout=5)
        assert ok.status_code == 200
    finally:
        handle.stop()


def test_a_child_process_gets_the_token_through_its_environment():
    handle = start_simulators("127.0.0.1", oidc_port=0, only=["oidc"], in_process=False, control_token=SIM_TOKEN)
    try:
        url = f"{handle.urls['oidc']}/_sim/state"
        assert requests.get(url, timeout=5).status_code == 401
        assert requests.get(url, headers=CONTROL_HEADERS, timeout=5).status_code == 200
    finally:
        handle.stop()


def test_lcm_simulators_prints_the_generated_token_but_never_one_it_was_given(settings, monkeypatch):
    """The command runs until a signal: `wait_for_signal` is replaced by a stop."""
    monkeypatch.setattr("workers.management.commands.lcm_simulators.wait_for_signal", lambda handle: handle.stop())
    settings.LCM_SIM_OIDC_PORT = 0
    settings.LCM_SIM_TOKEN = ""
    out = StringIO()
    call_command("lcm_simulators", "--only", "oidc", stdout=out)
    assert "X-Sim-Token: " in out.getvalue()
    settings.LCM_SIM_TOKEN = "given-by-the-launcher-0123456789"
    out = StringIO()
    call_command("lcm_simulators", "--only", "oidc", "--json", stdout=out)
    assert settings.LCM_SIM_TOKEN not in out.getvalue() and json.loads(out.getvalue())["urls"]["oidc"]
