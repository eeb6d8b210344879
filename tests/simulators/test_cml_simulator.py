"""The CML simulator over real HTTP: the §1.3 state machine, auth, licensing, readiness, faults and time,
its answers against `cml-2.9-openapi.json`, and Cisco's virl2-client driving a lab through it.

One server per module; every test makes its own virtual worker, so tests never share state.
"""

import json
import uuid
from types import SimpleNamespace

import jwt
import pytest
import requests
import virl2_client
import yaml

from sessions.seed import DEMO_LAB_FILE
from simulators.cml import OPERATIONS, CMLSimulator
from simulators.common import ServerThread
from tests.contract import openapi, request_errors, response_errors
from tests.support.simulators import sim_control

UUID4 = r"^[\da-f]{8}-[\da-f]{4}-4[\da-f]{3}-[89ab][\da-f]{3}-[\da-f]{12}$"


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


class Worker:
    """One virtual CML worker and a logged-in session against its API."""

    def __init__(self, cml, name: str, info: dict):
        self.cml = cml
        self.name = name
        self.base_url = info["base_url"]
        self.username = info["username"]
        self.password = info["password"]
        self.http = requests.Session()
        self.token = None

    def api(self, path: str) -> str:
        return f"{self.base_url}/api/v0{path}"

    def login(self) -> str:
        response = self.http.post(
            self.api("/authenticate"), json={"username": self.username, "password": self.password}
        )
        assert response.status_code == 200, response.text
        self.token = response.json()
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        return self.token

    def call(self, method: str, path: str, expect: int | None = None, **kwargs):
        response = self.http.request(method, self.api(path), timeout=5, **kwargs)
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response

    def get(self, path: str, **kwargs):
        return self.call("GET", path, expect=200, **kwargs).json()

    def import_lab(self, text: str, **kwargs) -> str:
        return self.call("POST", "/import", expect=200, data=text.encode(), **kwargs).json()["id"]

    def sim(self, method: str, path: str = "", **kwargs):
        return sim_control.request(method, f"{self.cml.url}/_sim/workers/{self.name}{path}", timeout=5, **kwargs)


def make_worker(cml, **options) -> Worker:
    name = f"w-{uuid.uuid4().hex[:8]}"
    response = sim_control.post(f"{cml.url}/_sim/workers", json={"name": name} | options, timeout=5)
    assert response.status_code == 201, response.text
    worker = Worker(cml, name, response.json())
    worker.login()
    return worker


def advance(cml, seconds: float) -> None:
    response = sim_control.post(f"{cml.url}/_sim/clock", json={"advance": seconds}, timeout=5)
    assert response.status_code == 200


@pytest.fixture
def worker(cml) -> Worker:
    return make_worker(cml)


@pytest.fixture
def demo_lab() -> str:
    return DEMO_LAB_FILE.read_text()


def test_a_worker_is_created_with_its_base_url_and_credentials(cml):
    name = f"w-{uuid.uuid4().hex[:8]}"
    created = sim_control.post(f"{cml.url}/_sim/workers", json={"name": name}, timeout=5)
    assert created.status_code == 201
    assert created.json() == {
        "name": name,
        "base_url": f"{cml.url}/w/{name}",
        "username": "admin",
        "password": "admin",
    }
    again = sim_control.post(f"{cml.url}/_sim/workers", json={"name": name}, timeout=5)
    assert again.status_code == 200 and again.json() == created.json()
    assert sim_control.post(f"{cml.url}/_sim/workers", json={"name": "bad name/"}, timeout=5).status_code == 400
    unknown = requests.get(f"{cml.url}/w/nobody-{name}/api/v0/system_information", timeout=5)
    assert unknown.status_code == 404 and set(unknown.json()) == {"code", "description"}


def test_with_auto_workers_the_first_request_makes_the_virtual_cml():
    """How the runner starts it: LCM's launched workers find their CML without LCM calling the control API."""
    simulator = CMLSimulator(auto_workers=True, timings={"warmup": 30})
    server = ServerThread(simulator.app).start()
    try:
        first = requests.get(f"{server.url}/w/auto-1/api/v0/system_information", timeout=5)
        assert first.status_code == 200 and first.json()["ready"] is False  # warming up, like a booting machine
        assert set(simulator.workers) == {"auto-1"}
        assert requests.get(f"{server.url}/w/auto-1/api/v0/system_information", timeout=5).status_code == 200
        assert set(simulator.workers) == {"auto-1"}
        bad = requests.get(f"{server.url}/w/bad%20name/api/v0/system_information", timeout=5)
        assert bad.status_code == 404 and set(simulator.workers) == {"auto-1"}
    finally:
        server.stop()


def test_import_start_converge_and_the_lab_is_never_booted(cml, demo_lab):
    worker = make_worker(cml, timings={"node_queue": 1, "node_boot": 5})
    lab_id = worker.import_lab(demo_lab)
    assert lab_id in worker.get("/labs")
    lab = worker.get(f"/labs/{lab_id}")
    assert lab["state"] == "DEFINED_ON_CORE" and lab["node_count"] == 2 and lab["link_count"] == 1
    assert lab["lab_title"] == "LCM demo - router and desktop"
    nodes = worker.get(f"/labs/{lab_id}/nodes", params={"data": "true"})
    assert {node["state"] for node in nodes} == {"DEFINED_ON_CORE"}
    assert all(node["id"] != "n0" for node in nodes), "the server assigns UUID4s"

    worker.call("PUT", f"/labs/{lab_id}/start", expect=204)
    seen = []
    for step in (0, 2, 5):
        advance(cml, step)
        seen.append(
            (
                worker.get(f"/labs/{lab_id}/state"),
                {n["state"] for n in worker.get(f"/labs/{lab_id}/nodes", params={"data": "true"})},
                worker.get(f"/labs/{lab_id}/check_if_converged"),
            )
        )
    assert seen == [
        ("STARTED", {"QUEUED"}, False),
        ("STARTED", {"STARTED"}, False),
        ("STARTED", {"BOOTED"}, True),
    ]
    node = worker.get(f"/labs/{lab_id}/nodes/{nodes[0]['id']}/state")
    assert node == {"state": "BOOTED", "progress": "Booted"}
    worker.call("PUT", f"/labs/{lab_id}/start", expect=204)  # starting a started lab is a no-op
    assert worker.get(f"/labs/{lab_id}/state") == "STARTED"

    categories = [event["category"] for event in worker.get("/telemetry/events")]
    assert categories.count("import_lab") == 1 and categories.count("start_lab") == 1
    assert categories.count("queue_node") == categories.count("start_node") == categories.count("boot_node") == 2
    events = worker.get(f"/labs/{lab_id}/events")
    assert {(e["event"], e["data"].get("state")) for e in events} >= {("STATE_CHANGED", "BOOTED")}
    stats = worker.get("/system_stats")
    (compute,) = stats["computes"].values()
    assert compute["stats"]["dominfo"]["running_nodes"] == 2


def test_wipe_is_refused_while_started_and_delete_is_strict(worker, demo_lab):
    lab_id = worker.import_lab(demo_lab)
    worker.call("PUT", f"/labs/{lab_id}/start", expect=204)
    refused = worker.call("PUT", f"/labs/{lab_id}/wipe", expect=400).json()
    assert refused["code"] == 400 and "stopped" in refused["description"]
    worker.call("DELETE", f"/labs/{lab_id}", expect=400)

    worker.call("PUT", f"/labs/{lab_id}/stop", expect=204)
    assert worker.get(f"/labs/{lab_id}/state") == "STOPPED"
    assert worker.get(f"/labs/{lab_id}/check_if_converged") is True
    worker.call("DELETE", f"/labs/{lab_id}", expect=400)  # stopped but not wiped

    worker.call("PUT", f"/labs/{lab_id}/wipe", expect=204)
    assert worker.get(f"/labs/{lab_id}/state") == "DEFINED_ON_CORE"
    worker.call("DELETE", f"/labs/{lab_id}", expect=204)
    gone = worker.call("GET", f"/labs/{lab_id}", expect=404).json()
    assert gone == {"code": 404, "description": f"Lab not found: {lab_id}"}
    worker.call("PUT", f"/labs/{lab_id}/start", expect=404)


def test_strict_delete_can_be_switched_off(worker, demo_lab):
    lab_id = worker.import_lab(demo_lab)
    worker.call("PUT", f"/labs/{lab_id}/start", expect=204)
    assert worker.sim("PATCH", json={"strict_delete": False}).status_code == 200
    worker.call("DELETE", f"/labs/{lab_id}", expect=204)
    assert worker.get("/labs") == []


def test_node_tags_and_annotations_come_back_as_imported(worker, sample_lab_yaml):
    lab_id = worker.import_lab(sample_lab_yaml, headers={"Content-Type": "application/x-yaml"})
    nodes = {n["label"]: n for n in worker.get(f"/labs/{lab_id}/nodes", params={"data": "true"})}
    assert nodes["vmanage-mock"]["tags"] == ["serial:5041"]
    assert nodes["ubuntu-desktop"]["tags"] == ["serial:5042", "vnc:5044"]
    assert nodes["ubuntu-desktop"]["node_definition"] == "ubuntu-desktop-24-04-v2"
    topology = worker.get(f"/labs/{lab_id}/topology")
    assert [a["tag"] for a in topology["smart_annotations"]] == ["serial:5041", "serial:5042", "vnc:5044"]
    assert [a["text_content"] for a in topology["annotations"]] == ["192.168.10.0/24", ".1", ".111"]
    assert topology["lab"]["title"] == "DEVASC_200-901_LAB-2.5.1"

    desktop = nodes["ubuntu-desktop"]["id"]
    patched = worker.call("PATCH", f"/labs/{lab_id}/nodes/{desktop}", expect=200, json={"tags": ["vnc:3002"]})
    assert patched.json() == desktop
    assert worker.get(f"/labs/{lab_id}/nodes/{desktop}")["tags"] == ["vnc:3002"]  # replaced, not merged
    worker.call("PATCH", f"/labs/{lab_id}/nodes/{desktop}", expect=400, json={"state": "BOOTED"})

    downloaded = yaml.safe_load(worker.get(f"/labs/{lab_id}/download"))
    assert [n["id"] for n in downloaded["nodes"]] == ["n0", "n1"]
    assert downloaded["nodes"][1]["tags"] == ["vnc:3002"]
    assert {(link["n1"], link["i1"], link["n2"], link["i2"]) for link in downloaded["links"]} == {
        ("n1", "i0", "n0", "i0")
    }


def test_import_accepts_json_and_a_title_and_rejects_bad_topologies(worker, demo_lab):
    as_json = yaml.safe_load(demo_lab)
    lab_id = worker.call("POST", "/import", expect=200, params={"title": "Renamed"}, json=as_json).json()["id"]
    assert worker.get(f"/labs/{lab_id}")["lab_title"] == "Renamed"

    def refused(topology) -> str:
        body = topology if isinstance(topology, str) else yaml.safe_dump(topology)
        answer = worker.call("POST", "/import", expect=400, data=body.encode()).json()
        assert answer["code"] == 400
        return answer["description"]

    assert "node definition" in refused(as_json | {"nodes": [as_json["nodes"][0] | {"node_definition": "nope"}]})
    assert "unexpected" in refused(as_json | {"nodes": [as_json["nodes"][0] | {"colour": "red"}]})
    assert "lab" in refused({k: v for k, v in as_json.items() if k != "lab"})
    assert "version" in refused(as_json | {"lab": {"version": "9.9.9"}})
    assert "interface" in refused(as_json | {"links": [as_json["links"][0] | {"i1": "i9"}]})
    assert refused("nodes: [unclosed")
    assert refused("- just\n- a list\n")


def test_licence_registration_goes_in_progress_then_completed(cml, worker):
    assert worker.sim("PATCH", json={"timings": {"licence_registration": 5}}).status_code == 200
    assert worker.get("/licensing")["registration"]["status"] == "UNREGISTERED"
    assert worker.get("/system_health")["is_licensed"] is False
    worker.call("POST", "/licensing/registration", expect=204, json={"token": "abc123=="})
    licence = worker.get("/licensing")
    assert licence["registration"]["status"] == "IN_PROGRESS"
    assert licence["registration"]["register_time"]["attempted"] is not None
    worker.call("POST", "/licensing/registration", expect=409, json={"token": "abc123=="})
    worker.call("DELETE", "/licensing/deregistration", expect=409)

    advance(cml, 5)
    licence = worker.get("/licensing")
    assert licence["registration"]["status"] == "COMPLETED"
    assert licence["authorization"]["status"] == "IN_COMPLIANCE"
    assert worker.get("/system_health")["is_licensed"] is True
    worker.call("POST", "/licensing/registration", expect=400, json={"token": "abc123=="})  # already registered

    worker.call("DELETE", "/licensing/deregistration", expect=204)
    assert worker.get("/licensing")["registration"]["status"] == "UNREGISTERED"
    worker.call("DELETE", "/licensing/deregistration", expect=400)  # already deregistered


def test_licence_registration_can_be_scripted_to_fail(cml, worker):
    worker.call("POST", "/licensing/registration", expect=400, json={"token": "not a token!"})
    faults = sim_control.post(
        f"{cml.url}/_sim/faults",
        json={"operation": "register_licence", "registration_fails": True, "worker": worker.name},
        timeout=5,
    )
    assert faults.status_code == 201
    worker.call("POST", "/licensing/registration", expect=204, json={"token": "abc"})
    licence = worker.get("/licensing")["registration"]
    assert licence["status"] == "FAILED" and licence["register_time"]["failure"]
    # The flag was for one registration only; a worker can also be scripted to always fail.
    worker.call("POST", "/licensing/registration", expect=204, json={"token": "abc"})
    assert worker.get("/licensing")["registration"]["status"] == "COMPLETED"
    worker.call("DELETE", "/licensing/deregistration", expect=204)
    worker.sim("PATCH", json={"registration_outcome": "FAILED", "deregistration_status": 202})
    worker.call("POST", "/licensing/registration", expect=204, json={"token": "abc"})
    assert worker.get("/licensing")["registration"]["status"] == "FAILED"


def test_tokens_are_real_jwts_that_expire_and_can_be_revoked(cml):
    worker = make_worker(cml, timings={"token_lifetime": 60})
    claims = jwt.decode(worker.token, options={"verify_signature": False})
    assert claims["iss"] == "com.cisco.virl" and claims["exp"] - claims["iat"] == 60
    assert (
        claims["sub"]
        == requests.post(
            worker.api("/auth_extended"), json={"username": "admin", "password": "admin"}, timeout=5
        ).json()["id"]
    )
    assert worker.get("/authok") == "OK"

    advance(cml, 61)
    expired = worker.call("GET", "/authok", expect=401).json()
    assert expired == {"code": 401, "description": "Token has expired."}
    worker.call("GET", "/labs", expect=401)
    worker.login()
    worker.call("GET", "/labs", expect=200)

    assert worker.sim("POST", "/expire_tokens").json() == {"expired": 1}  # the expired ones were pruned
    worker.call("GET", "/labs", expect=401)
    worker.login()
    assert worker.call("DELETE", "/logout", expect=200).json() is True
    worker.call("GET", "/labs", expect=401)

    bad = requests.post(worker.api("/authenticate"), json={"username": "admin", "password": "wrong"}, timeout=5)
    assert bad.status_code == 403 and bad.json()["code"] == 403
    assert requests.get(worker.api("/labs"), timeout=5).status_code == 401
    other = make_worker(cml)
    assert requests.get(worker.api("/labs"), headers={"Authorization": f"Bearer {other.token}"}).status_code == 401


def test_an_injected_expired_token_fails_its_first_use(cml, worker):
    sim_control.post(
        f"{cml.url}/_sim/faults", json={"operation": "authenticate", "expire_tokens": True, "worker": worker.name}
    )
    worker.login()
    worker.call("GET", "/labs", expect=401)
    worker.login()  # the flag was consumed: this token is good
    worker.call("GET", "/labs", expect=200)


def test_readiness_gate_follows_the_warm_up_on_the_clock(cml, demo_lab):
    worker = make_worker(cml, warmup=30)
    info = worker.get("/system_information")
    assert info["ready"] is False and info["version"].startswith("2.9.")
    (compute,) = worker.get("/system_health")["computes"].values()
    assert compute["admission_state"] == "REGISTERED"
    lab_id = worker.import_lab(demo_lab)
    assert "no compute" in worker.call("PUT", f"/labs/{lab_id}/start", expect=400).json()["description"]

    advance(cml, 30)
    assert worker.get("/system_information")["ready"] is True
    worker.call("PUT", f"/labs/{lab_id}/start", expect=204)
    worker.sim("PATCH", json={"ready": False})
    assert worker.get("/system_information")["ready"] is False
    worker.sim("PATCH", json={"ready": None})
    assert worker.get("/system_information")["ready"] is True


def test_a_lab_beyond_the_licensed_node_limit_cannot_start(cml, demo_lab):
    worker = make_worker(cml, node_limit=3)
    first = worker.import_lab(demo_lab)
    second = worker.import_lab(demo_lab)
    worker.call("PUT", f"/labs/{first}/start", expect=204)
    refused = worker.call("PUT", f"/labs/{second}/start", expect=400).json()
    assert "licence allows 3" in refused["description"]
    assert worker.get(f"/labs/{second}/state") == "DEFINED_ON_CORE"
    assert worker.get("/licensing")["features"][0]["max"] == 3


def test_clock_advance_moves_slow_boots_and_stuck_nodes_stay_put(cml, demo_lab):
    worker = make_worker(cml, timings={"node_boot": 600, "node_boot.iosv": 60})
    lab_id = worker.import_lab(demo_lab)
    worker.call("PUT", f"/labs/{lab_id}/start", expect=204)
    advance(cml, 61)
    states = {n["label"]: n["state"] for n in worker.get(f"/labs/{lab_id}/nodes", params={"data": "true"})}
    assert states == {"edge-router": "BOOTED", "workstation": "STARTED"}
    assert worker.get(f"/labs/{lab_id}/check_if_converged") is False

    desktop = next(
        n for n in worker.get(f"/labs/{lab_id}/nodes", params={"data": "true"}) if n["label"] != "edge-router"
    )
    assert worker.sim("PATCH", f"/labs/{lab_id}/nodes/{desktop['id']}", json={"stuck": "QUEUED"}).status_code == 200
    advance(cml, 3600)
    assert worker.get(f"/labs/{lab_id}/nodes/{desktop['id']}/state")["state"] == "QUEUED"
    assert worker.get(f"/labs/{lab_id}/check_if_converged") is False
    worker.sim("PATCH", f"/labs/{lab_id}", json={"stuck": "DISCONNECTED"})
    assert set(worker.get(f"/labs/{lab_id}/lab_element_state")["nodes"].values()) == {"DISCONNECTED"}
    worker.sim("PATCH", f"/labs/{lab_id}", json={"stuck": None})
    assert worker.get(f"/labs/{lab_id}/check_if_converged") is True


def test_a_lab_can_vanish_behind_the_clients_back(worker, demo_lab):
    lab_id = worker.import_lab(demo_lab)
    assert worker.sim("DELETE", f"/labs/{lab_id}").status_code == 200
    worker.call("GET", f"/labs/{lab_id}/state", expect=404)
    assert worker.get("/labs") == []
    assert worker.sim("DELETE", f"/labs/{lab_id}").status_code == 404


def test_faults_by_short_name_or_operation_id_and_per_worker(cml, worker, demo_lab):
    other = make_worker(cml)
    lab_id = worker.import_lab(demo_lab)
    other_lab = other.import_lab(demo_lab)
    sim_control.post(
        f"{cml.url}/_sim/faults",
        json=[
            {"operation": "lab_state", "status": 503, "times": 2, "worker": worker.name},
            {"operation": OPERATIONS["get_lab"], "status": 502, "times": 1},
        ],
        timeout=5,
    )
    other.call("GET", f"/labs/{other_lab}/state", expect=200)  # not this worker's fault
    assert worker.call("GET", f"/labs/{lab_id}/state", expect=503).json()["code"] == 503
    worker.call("GET", f"/labs/{lab_id}/state", expect=503)
    worker.call("GET", f"/labs/{lab_id}/state", expect=200)
    other.call("GET", f"/labs/{other_lab}", expect=502)
    worker.call("GET", f"/labs/{lab_id}", expect=200)
    assert lab_id not in other.get("/labs")


def test_a_worker_that_is_down_drops_connections(worker):
    worker.sim("PATCH", json={"down": True})
    with pytest.raises(requests.ConnectionError):
        worker.http.get(worker.api("/labs"), timeout=5)
    worker.sim("PATCH", json={"down": False})
    worker.call("GET", "/labs", expect=200)
    sim_control.post(f"{worker.cml.url}/_sim/faults", json={"operation": "labs", "reset": True, "worker": worker.name})
    with pytest.raises(requests.ConnectionError):
        worker.http.get(worker.api("/labs"), timeout=5)
    worker.call("GET", "/labs", expect=200)


def test_every_short_name_is_an_operation_of_the_spec(shared_specs):
    spec = json.loads((shared_specs / "cml-2.9-openapi.json").read_text())
    operation_ids = {
        op["operationId"] for item in spec["paths"].values() for op in item.values() if isinstance(op, dict)
    }
    assert set(OPERATIONS.values()) <= operation_ids


def _drive_auth_and_system(worker) -> None:
    worker.login()
    creds = {"username": worker.username, "password": worker.password}
    worker.call("POST", "/auth_extended", expect=200, json=creds)
    worker.call("POST", "/authenticate", expect=403, json=creds | {"password": "wrong"})
    worker.get("/authok")
    for path in ("/system_information", "/system_health", "/system_stats", "/system/compute_hosts", "/users"):
        worker.get(path)


def _drive_lab_reads(worker, lab_id: str, node_id: str) -> None:
    for path in ("", "/state", "/check_if_converged", "/lab_element_state", "/simulation_stats", "/download"):
        worker.get(f"/labs/{lab_id}{path}")
    for path in ("/topology", "/events", "/layer3_addresses", "/links"):
        worker.get(f"/labs/{lab_id}{path}")
    worker.get(f"/labs/{lab_id}/topology", params={"exclude_configurations": "true"})
    worker.get(
        f"/labs/{lab_id}/nodes", params={"data": "true", "operational": "true", "exclude_configurations": "true"}
    )
    links = worker.get(f"/labs/{lab_id}/links", params={"data": "true"})
    worker.get(f"/labs/{lab_id}/links/{links[0]['id']}")
    worker.get(f"/labs/{lab_id}/nodes/{node_id}", params={"operational": "true"})
    worker.get(f"/labs/{lab_id}/nodes/{node_id}/state")
    worker.get(f"/labs/{lab_id}/nodes/{node_id}/keys/console", params={"line": "0"})
    interfaces = worker.get(
        f"/labs/{lab_id}/nodes/{node_id}/interfaces", params={"data": "true", "operational": "true"}
    )
    worker.get(f"/labs/{lab_id}/interfaces/{interfaces[0]['id']}")


def _drive_lab(worker, sample_lab_yaml: str) -> str:
    topology = yaml.safe_load(sample_lab_yaml)
    lab_id = worker.call("POST", "/import", expect=200, json=topology).json()["id"]
    unknown_definition = topology | {
        "nodes": [topology["nodes"][0] | {"node_definition": "no-such-image"}],
        "links": [],
    }
    worker.call("POST", "/import", expect=400, json=unknown_definition)  # valid per the spec, refused by the server
    worker.get("/labs", params={"show_all": "true"})
    node_id = worker.get(f"/labs/{lab_id}/nodes")[0]
    worker.call("PATCH", f"/labs/{lab_id}/nodes/{node_id}", expect=200, json={"tags": ["serial:3001"]})
    worker.call("PUT", f"/labs/{lab_id}/start", expect=204)
    worker.call("PUT", f"/labs/{lab_id}/nodes/{node_id}/extract_configuration", expect=200)
    _drive_lab_reads(worker, lab_id, node_id)
    worker.call("PUT", f"/labs/{lab_id}/wipe", expect=400)
    worker.call("PUT", f"/labs/{lab_id}/nodes/{node_id}/state/stop", expect=204)
    worker.call("PUT", f"/labs/{lab_id}/nodes/{node_id}/extract_configuration", expect=400)  # not running
    worker.call("PUT", f"/labs/{lab_id}/nodes/{node_id}/wipe_disks", expect=204)
    worker.call("PUT", f"/labs/{lab_id}/nodes/{node_id}/state/start", expect=204)
    worker.call("PUT", f"/labs/{lab_id}/stop", expect=204)
    worker.call("PUT", f"/labs/{lab_id}/wipe", expect=204)
    return lab_id


def _drive_licensing(worker, cml) -> None:
    worker.call("POST", "/licensing/registration", expect=204, json={"token": "abc", "reregister": False})
    worker.call("POST", "/licensing/registration", expect=409, json={"token": "abc"})
    worker.get("/licensing")
    advance(cml, 1)
    worker.get("/licensing")
    worker.call("PUT", "/licensing/registration/renew", expect=204)
    worker.call("PUT", "/licensing/authorization/renew", expect=204)
    worker.call("DELETE", "/licensing/deregistration", expect=204)
    worker.call("DELETE", "/licensing/deregistration", expect=400)
    worker.get("/telemetry/events")


def test_every_served_operation_matches_the_spec(cml, shared_specs, sample_lab_yaml):
    """Drive every route (happy paths and typical errors), then check each recorded call against the spec."""
    worker = make_worker(cml, timings={"licence_registration": 1})
    cml.simulator.recorder.clear()
    _drive_auth_and_system(worker)
    lab_id = _drive_lab(worker, sample_lab_yaml)
    _drive_licensing(worker, cml)
    worker.call("DELETE", f"/labs/{lab_id}", expect=204)
    worker.call("GET", f"/labs/{lab_id}", expect=404)
    worker.call("DELETE", "/logout", expect=200, params={"clear_all_sessions": "true"})
    worker.call("GET", "/authok", expect=401)

    api = openapi("cml-2.9-openapi.json", server_url=f"{worker.base_url}/api/v0")
    records = [r for r in cml.simulator.recorder.list() if r["path"].startswith(f"/w/{worker.name}/")]
    problems = [
        (r["method"], r["path"], r["status"], errors)
        for r in records
        if (errors := request_errors(api, r, cml.url) + response_errors(api, r, cml.url))
    ]
    assert problems == []
    served = {r["operation"] for r in records}
    print(f"\nCML simulator: {len(served)} operations validated against cml-2.9-openapi.json")
    assert served == set(OPERATIONS.values())


def test_virl2_client_runs_a_lab_through_the_simulator(cml, shared_specs, sample_lab_yaml):
    """Cisco's own client (2.9.1) logs in (version check included) and runs the whole lab life cycle."""
    worker = make_worker(cml)
    cml.simulator.recorder.clear()
    client = virl2_client.ClientLibrary(
        worker.base_url + "/",
        worker.username,
        worker.password,
        ssl_verify=False,
        allow_http=True,
        convergence_wait_time=0.05,
    )
    lab = client.import_lab(sample_lab_yaml, title="virl2 cross-check")
    assert {node.label for node in lab.nodes()} == {"vmanage-mock", "ubuntu-desktop"}
    assert lab.get_node_by_label("ubuntu-desktop").tags() == ["serial:5042", "vnc:5044"]
    lab.start()  # waits for convergence
    assert lab.state() == "STARTED" and lab.has_converged()
    lab.stop()
    assert lab.state() == "STOPPED"
    lab.wipe()
    assert lab.state() == "DEFINED_ON_CORE"
    lab.remove()
    assert client.get_lab_list() == []

    # The simulator's answers to virl2-client also follow the spec (its YAML import body is its own choice).
    api = openapi("cml-2.9-openapi.json", server_url=f"{worker.base_url}/api/v0")
    records = [r for r in cml.simulator.recorder.list() if r["path"].startswith(f"/w/{worker.name}/")]
    assert {r["operation"] for r in records} >= {OPERATIONS[op] for op in ("system_information", "authok", "topology")}
    assert [(r["path"], e) for r in records if (e := response_errors(api, r, cml.url))] == []


def test_a_configured_node_is_extracted_into_the_download_and_imports_again(cml, sample_lab_yaml):
    """A candidate's change to a running node (set through `/_sim/`) reaches the stored configuration only by
    `extract_configuration`; the downloaded YAML carries it and imports as a new lab with it."""
    worker = make_worker(cml)
    lab_id = worker.call("POST", "/import", expect=200, json=yaml.safe_load(sample_lab_yaml)).json()["id"]
    configure = f"{cml.url}/_sim/workers/{worker.name}/labs/{lab_id}/nodes/ubuntu-desktop/configuration"
    assert sim_control.put(configure, json={"configuration": "hostname x"}, timeout=5).status_code == 409
    worker.call("PUT", f"/labs/{lab_id}/start", expect=204)
    answer = sim_control.put(configure, json={"configuration": "hostname candidate-7"}, timeout=5)
    assert answer.status_code == 200
    node_id = answer.json()["node"]
    assert "candidate-7" not in worker.get(f"/labs/{lab_id}/download")
    worker.call("PUT", f"/labs/{lab_id}/nodes/{node_id}/extract_configuration", expect=200)
    downloaded = yaml.safe_load(worker.get(f"/labs/{lab_id}/download"))
    by_label = {node["label"]: node for node in downloaded["nodes"]}
    assert by_label["ubuntu-desktop"]["configuration"] == "hostname candidate-7"
    again = worker.call("POST", "/import", expect=200, json=downloaded).json()["id"]
    nodes = worker.get(f"/labs/{again}/nodes", params={"data": "true"})
    assert {n["label"]: n["configuration"] for n in nodes}["ubuntu-desktop"] == "hostname candidate-7"
