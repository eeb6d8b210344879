"""`CMLClient` against the CML simulator over real HTTP: the whole flow, retries, timeouts, re-authentication,
typed errors for hard failures, and a contract check of every call it made against `cml-2.9-openapi.json`.

One simulator per module; each test gets its own virtual worker (so its own token cache key).
"""

import socket
import time
import uuid
from types import SimpleNamespace

import pytest

from lcm.http import (
    AuthExpired,
    BadRequest,
    Conflict,
    ExternalError,
    Forbidden,
    NotFound,
    Timeout,
    Timeouts,
    Unavailable,
)
from sessions.seed import DEMO_LAB_FILE
from simulators.cml import OPERATIONS, CMLSimulator
from simulators.common import ServerThread
from tests.contract import openapi, request_errors, response_errors
from tests.support.simulators import sim_control
from workers.clients.cml import CMLClient, cml_client_for
from workers.models import CMLWorker


@pytest.fixture(scope="module")
def cml():
    simulator = CMLSimulator(zero_delay=True)
    server = ServerThread(simulator.app).start()
    yield SimpleNamespace(simulator=simulator, url=server.url)
    server.stop()


@pytest.fixture(autouse=True)
def clean_faults(cml):
    cml.simulator.faults.clear()
    yield
    cml.simulator.faults.clear()


def new_worker(cml, **options) -> dict:
    response = sim_control.post(
        f"{cml.url}/_sim/workers", json={"name": f"w-{uuid.uuid4().hex[:8]}"} | options, timeout=5
    )
    assert response.status_code == 201, response.text
    return response.json()


def client_for(worker: dict, *, read: float = 5.0, retries: int = 2, password: str | None = None) -> CMLClient:
    return CMLClient(
        worker["base_url"],
        worker["username"],
        password or worker["password"],
        timeouts=Timeouts(connect=1.0, read=read),
        retries=retries,
        backoff=0.01,
        backoff_max=0.02,
    )


def inject(cml, *rules: dict) -> None:
    assert sim_control.post(f"{cml.url}/_sim/faults", json=list(rules), timeout=5).status_code == 201


def calls(cml, worker: dict, operation: str) -> int:
    """How many times the worker's simulator served an operation (by short name)."""
    name = worker["name"]
    return sum(
        1
        for r in cml.simulator.recorder.list()
        if r["operation"] == OPERATIONS[operation] and r["path"].startswith(f"/w/{name}/")
    )


@pytest.fixture
def worker(cml) -> dict:
    return new_worker(cml)


@pytest.fixture
def client(worker) -> CMLClient:
    return client_for(worker)


def wait_until(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def run_flow(cml, client: CMLClient, lab_yaml: str) -> str:
    """The lab and licence life cycle LCM drives, end to end; returns the (deleted) lab's id."""
    info = client.system_information()
    assert info["ready"] is True and info["version"].startswith("2.9.")
    assert client.system_health()["valid"] is True

    lab_id = client.import_lab(lab_yaml, title="LCM flow")
    assert lab_id in client.labs()
    assert client.get_lab(lab_id)["lab_title"] == "LCM flow"
    assert client.lab_state(lab_id) == "DEFINED_ON_CORE"
    nodes = client.nodes(lab_id)
    tagged = next(node for node in nodes if node["tags"])
    client.patch_node_tags(lab_id, tagged["id"], ["serial:3001", "vnc:3002"])
    assert next(n for n in client.nodes(lab_id) if n["id"] == tagged["id"])["tags"] == ["serial:3001", "vnc:3002"]

    client.start_lab(lab_id)
    wait_until(lambda: client.lab_state(lab_id) == "STARTED" and client.check_converged(lab_id))
    assert {node["state"] for node in client.nodes(lab_id)} == {"BOOTED"}
    (compute,) = client.system_stats()["computes"].values()
    assert compute["stats"]["dominfo"]["running_nodes"] == len(nodes)

    client.stop_lab(lab_id)
    assert client.lab_state(lab_id) == "STOPPED"
    client.wipe_lab(lab_id)
    assert client.lab_state(lab_id) == "DEFINED_ON_CORE"
    client.delete_lab(lab_id)
    with pytest.raises(NotFound):
        client.get_lab(lab_id)

    client.register_licence("abc123==")
    wait_until(lambda: client.licensing()["registration"]["status"] == "COMPLETED")
    assert client.deregister_licence() is True
    assert client.licensing()["registration"]["status"] == "UNREGISTERED"
    categories = {event["category"] for event in client.telemetry_events()}
    assert {"import_lab", "start_lab", "boot_node", "stop_lab", "wipe_node", "license_info"} <= categories
    return lab_id


def test_the_full_flow(cml, worker, client):
    run_flow(cml, client, DEMO_LAB_FILE.read_text())
    assert calls(cml, worker, "authenticate") == 1, "one token for the whole flow"


def test_a_5xx_is_retried_until_it_succeeds(cml, worker, client):
    lab_id = client.import_lab(DEMO_LAB_FILE.read_text())
    inject(cml, {"operation": "get_lab", "status": 503, "times": 2, "worker": worker["name"]})
    assert client.get_lab(lab_id)["id"] == lab_id
    assert calls(cml, worker, "get_lab") == 3


def test_a_5xx_that_persists_is_unavailable(cml, worker, client):
    inject(cml, {"operation": "labs", "status": 502, "times": None, "worker": worker["name"]})
    with pytest.raises(Unavailable) as raised:
        client.labs()
    assert raised.value.status == 502 and raised.value.system == "cml"
    assert calls(cml, worker, "labs") == 3  # the call and its two retries


def test_a_non_idempotent_import_is_not_retried(cml, worker, client):
    inject(cml, {"operation": "import_lab", "status": 503, "times": 1, "worker": worker["name"]})
    with pytest.raises(Unavailable):
        client.import_lab(DEMO_LAB_FILE.read_text())
    assert calls(cml, worker, "import_lab") == 1


def test_a_delay_beyond_the_timeout_returns_within_the_timeout(cml, worker):
    client = client_for(worker, read=0.5)
    lab_id = client.import_lab(DEMO_LAB_FILE.read_text())
    inject(cml, {"operation": "lab_state", "delay": 1.5, "worker": worker["name"]})
    started = time.monotonic()
    with pytest.raises(Timeout):
        client.lab_state(lab_id)
    assert time.monotonic() - started < 0.5 + 1
    assert client.lab_state(lab_id) == "DEFINED_ON_CORE"  # the fault fired once


def test_a_token_expired_mid_flow_costs_exactly_one_reauthentication(cml, worker, client):
    lab_id = client.import_lab(DEMO_LAB_FILE.read_text())
    assert calls(cml, worker, "authenticate") == 1
    expired = sim_control.post(f"{cml.url}/_sim/workers/{worker['name']}/expire_tokens", timeout=5).json()
    assert expired == {"expired": 1}
    client.start_lab(lab_id)
    assert client.lab_state(lab_id) == "STARTED"
    assert calls(cml, worker, "authenticate") == 2
    assert calls(cml, worker, "start_lab") == 2  # the 401, then the retry


def test_a_token_that_keeps_failing_is_auth_expired_after_one_retry(cml, worker, client):
    inject(cml, {"operation": "authenticate", "expire_tokens": True, "times": None, "worker": worker["name"]})
    with pytest.raises(AuthExpired) as raised:
        client.labs()
    assert raised.value.status == 401
    assert calls(cml, worker, "authenticate") == 2
    assert calls(cml, worker, "labs") == 2


def test_the_token_is_shared_by_clients_of_the_same_worker(cml, worker):
    client_for(worker).labs()
    client_for(worker).labs()
    assert calls(cml, worker, "authenticate") == 1


def test_bad_credentials_are_forbidden(cml, worker):
    with pytest.raises(Forbidden) as raised:
        client_for(worker, password="wrong").labs()
    assert raised.value.status == 403 and "Authentication failed" in raised.value.detail


def test_missing_and_vanished_labs_are_not_found(cml, worker, client):
    with pytest.raises(NotFound):
        client.lab_state(str(uuid.uuid4()))
    lab_id = client.import_lab(DEMO_LAB_FILE.read_text())
    sim_control.delete(f"{cml.url}/_sim/workers/{worker['name']}/labs/{lab_id}", timeout=5)
    with pytest.raises(NotFound) as raised:
        client.start_lab(lab_id)
    assert raised.value.status == 404 and lab_id in raised.value.detail


def test_state_refusals_are_conflicts(cml, worker, client):
    lab_id = client.import_lab(DEMO_LAB_FILE.read_text())
    client.start_lab(lab_id)
    with pytest.raises(Conflict) as raised:
        client.wipe_lab(lab_id)
    assert raised.value.status == 400 and "stopped" in raised.value.detail
    with pytest.raises(Conflict):
        client.delete_lab(lab_id)
    sim_control.patch(f"{cml.url}/_sim/workers/{worker['name']}", json={"timings": {"licence_registration": 60}})
    client.register_licence("abc")
    with pytest.raises(Conflict) as raised:
        client.register_licence("abc")
    assert raised.value.status == 409
    inject(cml, {"operation": "deregister_licence", "status": 409, "worker": worker["name"]})
    with pytest.raises(Conflict):
        client.deregister_licence()


def test_refused_inputs_are_bad_requests(cml, worker, client):
    with pytest.raises(BadRequest):
        client.import_lab("nodes: [unclosed")  # refused locally, nothing sent
    assert calls(cml, worker, "import_lab") == 0
    with pytest.raises(BadRequest) as raised:
        client.import_lab(DEMO_LAB_FILE.read_text().replace("node_definition: iosv", "node_definition: nope"))
    assert raised.value.status == 400 and "nope" in raised.value.detail
    lab_id = client.import_lab(DEMO_LAB_FILE.read_text())
    inject(cml, {"operation": "start_lab", "status": 400, "worker": worker["name"]})
    with pytest.raises(BadRequest):
        client.start_lab(lab_id)
    with pytest.raises(BadRequest):
        client.deregister_licence()  # never registered
    sim_control.patch(f"{cml.url}/_sim/workers/{worker['name']}", json={"deregistration_status": 202}, timeout=5)
    client.register_licence("abc")
    assert client.deregister_licence() is False  # only deregistered locally


def test_unreachable_workers_are_unavailable_never_a_requests_error(cml, worker):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    dead = CMLClient(f"http://127.0.0.1:{dead_port}", "admin", "admin", retries=1, backoff=0.01)
    with pytest.raises(Unavailable) as raised:
        dead.system_information()
    assert raised.value.status is None and not isinstance(raised.value, Timeout)
    with pytest.raises(Unavailable):
        dead.labs()  # fails while authenticating, still typed

    down = client_for(worker, retries=1)
    sim_control.patch(f"{cml.url}/_sim/workers/{worker['name']}", json={"down": True}, timeout=5)
    with pytest.raises(Unavailable) as raised:
        down.system_information()
    assert isinstance(raised.value, ExternalError)
    sim_control.patch(f"{cml.url}/_sim/workers/{worker['name']}", json={"down": False}, timeout=5)
    assert down.system_information()["ready"] is True


def test_the_readiness_gate_is_visible_to_the_client(cml):
    worker = new_worker(cml, warmup=30)
    client = client_for(worker)
    assert client.system_information()["ready"] is False
    sim_control.post(f"{cml.url}/_sim/clock", json={"advance": 30}, timeout=5)
    assert client.system_information()["ready"] is True


def test_cml_client_for_takes_the_worker_url_and_settings(settings, worker):
    settings.LCM_CML_USERNAME = worker["username"]
    settings.LCM_CML_PASSWORD = worker["password"]
    settings.LCM_HTTP_READ_TIMEOUT = 7.0
    settings.LCM_HTTP_RETRIES = 1
    settings.LCM_CML_VERIFY_TLS = False
    client = cml_client_for(CMLWorker(name="w", cml_base_url=worker["base_url"] + "/"))
    assert client.base_url == worker["base_url"] + "/api/v0"
    assert (client.timeouts.read, client.retries, client.verify) == (7.0, 1, False)
    assert client.labs() == []
    with pytest.raises(Unavailable):
        cml_client_for(CMLWorker(name="not-yet", cml_base_url=""))


def test_every_call_of_the_flow_matches_the_spec(cml, shared_specs, sample_lab_yaml):
    """The contract test: every request the client sent and every answer it got, against cml-2.9-openapi.json."""
    worker = new_worker(cml)
    client = client_for(worker)
    lab_id = run_flow(cml, client, sample_lab_yaml)
    with pytest.raises(NotFound):
        client.lab_state(lab_id)
    api = openapi("cml-2.9-openapi.json", server_url=f"{worker['base_url']}/api/v0")
    records = [r for r in cml.simulator.recorder.list() if r["path"].startswith(f"/w/{worker['name']}/")]
    request_problems = [(r["method"], r["path"], e) for r in records if (e := request_errors(api, r, cml.url))]
    response_problems = [(r["method"], r["path"], e) for r in records if (e := response_errors(api, r, cml.url))]
    assert request_problems == []
    assert response_problems == []
    covered = {r["operation"] for r in records}
    print(f"\nCML client contract: {len(records)} calls, {len(covered)} operations covered: {sorted(covered)}")
    client_operations = {
        "authenticate",
        "system_information",
        "system_health",
        "system_stats",
        "telemetry_events",
        "labs",
        "import_lab",
        "get_lab",
        "lab_state",
        "start_lab",
        "stop_lab",
        "wipe_lab",
        "delete_lab",
        "check_converged",
        "nodes",
        "patch_node",
        "licensing",
        "register_licence",
        "deregister_licence",
    }
    assert covered == {OPERATIONS[name] for name in client_operations}


def test_the_shared_session_reads_the_environment_once_unless_a_proxy_is_set(monkeypatch):
    """A CA bundle named in the environment is used, but without a proxy requests does not rescan the
    environment (nor look for ~/.netrc) on every call."""
    from lcm import http

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setattr(http, "_thread", http.threading.local())
    session = http.shared_session()
    assert session.trust_env is False and session.verify == "/etc/ssl/certs/ca-certificates.crt"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setattr(http, "_thread", http.threading.local())
    assert http.shared_session().trust_env is True
