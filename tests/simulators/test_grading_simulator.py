"""The Grading Engine simulator: client-credentials tokens (real JWTs on the simulator's clock), validation with
ProblemDetails, the part lifecycle created -> grading -> reviewing/faulted -> locked (EXTERNAL-SYSTEMS.md §4.4),
grading that finishes by itself, CloudEvents on completion and failure (§4.6) and the control API. The client's
flow and the contract check against the official spec are in tests/grading/test_grading_client.py."""

import time

import jwt
import pytest
import requests
import yaml

from simulators.common import ServerThread
from simulators.grading import GradingSimulator
from tests.support.simulators import sim_control

API = "/api/v1"
SECRET = "test-webhook-secret"
CLIENT = ("lcm", "grading-test-secret")
TOKEN_PATH = "/realms/lcm/protocol/openid-connect/token"


@pytest.fixture(scope="module")
def grading_server(capture):
    simulator = GradingSimulator(
        zero_delay=True,
        seed=7,
        clients={CLIENT[0]: CLIENT[1], "no-api": {"secret": "s", "scopes": ["profile"]}},
        webhook_url=capture.url,
        webhook_secret=SECRET,
    )
    server = ServerThread(simulator.app).start()
    yield simulator, server.url
    server.stop()


class Engine:
    """The simulator plus an HTTP session carrying a fresh bearer token."""

    def __init__(self, simulator: GradingSimulator, url: str):
        self.simulator = simulator
        self.url = url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.token()['access_token']}"

    def token(self, client=CLIENT, **form) -> dict:
        data = {"grant_type": "client_credentials", "client_id": client[0], "client_secret": client[1]} | form
        response = requests.post(self.url + TOKEN_PATH, data=data, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    def call(self, method: str, path: str, expect: int = 200, **kwargs) -> requests.Response:
        response = self.http.request(method, self.url + API + path, timeout=5, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response

    def control(self, method: str, path: str, expect: int = 200, **kwargs) -> dict:
        response = requests.request(method, f"{self.url}/_sim{path}", timeout=5, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response.json()

    def create(self, session_id: str, *, pod: bool = True) -> dict:
        part = {"id": "DEMO-LAB-1"} | ({"pod": pod_body()} if pod else {})
        body = {"id": session_id, "candidateId": "candidate-1", "lds": {"id": "lds-1", "environment": "local"}}
        return self.call("POST", "/sessions", json=body | {"parts": [part]}).json()

    def part(self, session_id: str, part_id: str = "DEMO-LAB-1") -> dict:
        session = self.call("GET", f"/sessions/{session_id}").json()
        return next(p for p in session["parts"] if p["id"] == part_id)


@pytest.fixture
def engine(grading_server):
    simulator, url = grading_server
    saved = dict(simulator.timings)
    sim_control.post(f"{url}/_sim/reset", timeout=5)
    yield Engine(simulator, url)
    simulator.timings = saved
    simulator.zero_delay = True


def pod_body() -> dict:
    return {
        "id": "pod-1",
        "devices": [
            {
                "label": "router",
                "hostname": "router",
                "collector": "lcm",
                "interfaces": [{"name": "console", "protocol": "telnet", "host": "10.0.0.5", "port": 5041}],
            }
        ],
    }


def wait_status(engine: Engine, session_id: str, status: str, timeout: float = 2.0) -> dict:
    deadline = time.monotonic() + timeout
    part = engine.part(session_id)
    while part["status"] != status and time.monotonic() < deadline:
        time.sleep(0.02)
        part = engine.part(session_id)
    return part


# -- tokens ----------------------------------------------------------------------------------


def test_client_credentials_give_a_real_jwt_with_the_api_scope(engine):
    answer = engine.token(scope="api")
    assert answer["token_type"] == "Bearer" and answer["scope"] == "api"
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["sub"] == CLIENT[0]
    assert claims["exp"] - claims["iat"] == answer["expires_in"] == 300
    basic = requests.post(engine.url + TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=CLIENT, timeout=5)
    assert basic.status_code == 200


def test_the_token_endpoint_refuses_bad_clients_grants_scopes_and_realms(engine):
    def post(path=TOKEN_PATH, **form):
        base = {"grant_type": "client_credentials", "client_id": CLIENT[0], "client_secret": CLIENT[1]}
        return requests.post(engine.url + path, data=base | form, timeout=5)

    assert post(client_secret="wrong").json()["error"] == "invalid_client"
    assert post(client_secret="wrong").status_code == 401
    assert post(grant_type="password").json()["error"] == "unsupported_grant_type"
    assert post(scope="admin").json()["error"] == "invalid_scope"
    assert post(path="/realms/other/protocol/openid-connect/token").status_code == 404


def test_the_api_needs_a_valid_token_with_the_api_scope(engine):
    url = f"{engine.url}{API}/sessions/anything"
    missing = requests.get(url, timeout=5)
    assert missing.status_code == 401 and missing.content == b""  # the spec declares no body for 401
    assert requests.get(url, headers={"Authorization": "Bearer forged"}, timeout=5).status_code == 401
    scopeless = engine.token(client=("no-api", "s"))["access_token"]
    forbidden = requests.get(url, headers={"Authorization": f"Bearer {scopeless}"}, timeout=5)
    assert forbidden.status_code == 403 and forbidden.content == b""


def test_tokens_expire_on_the_clock_and_can_be_revoked(engine):
    engine.call("GET", "/sessions/none", expect=404)
    engine.control("POST", "/clock", json={"advance": 301})
    engine.call("GET", "/sessions/none", expect=401)

    engine.http.headers["Authorization"] = f"Bearer {engine.token()['access_token']}"
    engine.call("GET", "/sessions/none", expect=404)
    assert engine.control("POST", "/tokens/revoke")["revoked"] >= 1
    engine.call("GET", "/sessions/none", expect=401)

    engine.control("POST", "/faults", expect=201, json={"operation": "tokens", "expire_tokens": True})
    engine.http.headers["Authorization"] = f"Bearer {engine.token()['access_token']}"
    engine.call("GET", "/sessions/none", expect=401)


# -- validation ------------------------------------------------------------------------------


def test_invalid_commands_get_problem_details_with_field_errors(engine):
    short = engine.call("POST", "/sessions", expect=422, json={"candidateId": "ab"}).json()
    assert short["status"] == 422 and "command.candidateId" in short["errors"]
    no_interfaces = {"candidateId": "abc", "parts": [{"id": "PART-1", "pod": {"id": "p", "devices": [{}]}}]}
    errors = engine.call("POST", "/sessions", expect=422, json=no_interfaces).json()["errors"]
    assert "command.parts[0].pod.devices[0].interfaces" in errors
    assert "command.parts[0].pod.devices[0].hostname" in errors
    engine.call("POST", "/sessions", expect=422, json={"candidateId": "abc", "lds": {"id": "x"}})
    engine.call("POST", "/sessions", expect=422, json={"candidateId": "abc", "colour": "red"})
    engine.call("POST", "/sessions", expect=422, json={"candidateId": "abc", "parts": [{"id": "P1"}]})
    engine.call("POST", "/sessions", expect=400, data="{not json", headers={"Content-Type": "application/json"})
    assert engine.simulator.sessions == {}


def test_yaml_bodies_are_accepted(engine):
    body = yaml.safe_dump({"id": "yaml-1", "candidateId": "candidate-1"})
    created = engine.call("POST", "/sessions", data=body, headers={"Content-Type": "application/yaml"}).json()
    assert created["id"] == "yaml-1" and created["status"] == "created"


def test_unknown_sessions_and_parts_are_404_and_ids_are_unique(engine):
    engine.create("s-404")
    engine.call("GET", "/sessions/nope", expect=404)
    engine.call("POST", "/sessions/s-404/parts/NOPE/grade", expect=404)
    engine.call("POST", "/sessions/parts", expect=404, json={"sessionId": "nope", "part": {"id": "PART-2"}})
    assert engine.call("POST", "/sessions", expect=400, json={"id": "s-404", "candidateId": "abc"}).json()["title"]


# -- the part lifecycle ----------------------------------------------------------------------


def test_grade_review_regrade_submit_and_lock(engine):
    engine.create("s-life", pod=False)
    engine.call("POST", "/sessions/s-life/parts/DEMO-LAB-1/grade", expect=400)  # nothing to collect from
    engine.call("POST", "/sessions/s-life/parts/DEMO-LAB-1/submit", expect=400)  # nothing graded
    engine.call("POST", "/sessions/s-life/parts/DEMO-LAB-1/pod", json=pod_body())
    engine.control("POST", "/grading/outcomes", expect=201, json={"outcome": "complete", "score": 80, "times": 2})

    engine.call("POST", "/sessions/s-life/parts/DEMO-LAB-1/grade", expect=202)
    graded = wait_status(engine, "s-life", "reviewing")

    report = graded["scoreReport"]
    assert (report["score"], report["maxScore"], report["generation"], report["revision"]) == (80, 100, 1, 0)
    assert [(s["score"], s["maxScore"]) for s in report["sections"]] == [(60, 60), (20, 40)]
    assert graded["firstGraded"] is not None
    engine.call("POST", "/sessions/s-life/parts/DEMO-LAB-1/grade", expect=202, params={"recollect": "true"})
    assert wait_status(engine, "s-life", "reviewing")["scoreReport"]["generation"] == 2
    engine.call("POST", "/sessions/s-life/parts/DEMO-LAB-1/sections/1/items/0/grade", expect=202)
    regraded = wait_status(engine, "s-life", "reviewing")["scoreReport"]
    assert (regraded["generation"], regraded["revision"], regraded["score"]) == (2, 1, 100)
    engine.call("POST", "/sessions/s-life/parts/DEMO-LAB-1/sections/5/items/0/grade", expect=404)

    submitted = engine.call("POST", "/sessions/s-life/parts/DEMO-LAB-1/submit").json()

    assert submitted["status"] == "locked"
    assert submitted["parts"][0]["lastSubmitted"] is not None
    engine.call("POST", "/sessions/s-life/parts/DEMO-LAB-1/submit")  # submitting again changes nothing
    engine.call("POST", "/sessions/s-life/parts/DEMO-LAB-1/grade", expect=400)  # a locked part is not re-graded
    engine.call("PUT", "/sessions/s-life/parts/DEMO-LAB-1/pod", expect=400, json=pod_body())
    actions = [entry["action"] for entry in engine.part("s-life")["auditTrail"]]
    assert actions[:4] == ["create", "assign pod", "grade", "graded"] and actions[-1] == "submit"
    assert engine.part("s-life")["auditTrail"][2]["actor"]["id"] == CLIENT[0]


def test_grading_finishes_by_itself_and_emits_completed(engine, capture):
    engine.simulator.zero_delay = False
    engine.simulator.timings["grading_delay"] = 0.3
    engine.create("s-auto")
    engine.call("POST", "/sessions/s-auto/parts/DEMO-LAB-1/grade", expect=202)
    assert engine.part("s-auto")["status"] == "grading"

    # Nobody polls: the wake-up thread finishes the job and the event arrives on its own.
    [event] = capture.wait("s-auto", "session.completed")

    [delivery] = [r for r in capture.received if r["event"]["id"] == event["id"]]
    assert delivery["content_type"] == "application/cloudevents+json"
    assert delivery["headers"]["X-Lcm-Webhook-Secret"] == SECRET
    assert event["type"] == "io.lablet.grading.session.completed"
    assert event["data"]["grading_session_id"] == "s-auto"
    assert event["data"]["lds_session_id"] == "lds-1"
    score = event["data"]["score"]
    assert 0 <= score["total"] <= score["max"] == 100
    assert sum(b["points"] for b in score["breakdown"]) == score["total"]
    assert event["data"]["passed"] is (score["total"] >= 70)
    assert engine.part("s-auto")["status"] == "reviewing"


def test_control_complete_with_a_score_and_control_fail(engine, capture):
    engine.control("POST", "/grading/outcomes", expect=201, json={"outcome": "hang", "times": None})
    engine.create("s-ok")
    engine.create("s-bad")
    engine.call("POST", "/sessions/s-ok/parts/DEMO-LAB-1/grade", expect=202)
    engine.call("POST", "/sessions/s-bad/parts/DEMO-LAB-1/grade", expect=202)

    completed = engine.control("POST", "/grading/s-ok/complete", json={"score": 85})
    failed = engine.control("POST", "/grading/s-bad/fail", json={"reason": "collector lost the console"})

    assert completed["status"] == "reviewing" and completed["parts"][0]["scoreReport"]["score"] == 85
    assert failed["status"] == "faulted"
    assert failed["parts"][0]["statusReason"] == "collector lost the console"
    [done] = capture.wait("s-ok", "session.completed")
    assert done["data"]["passed"] is True and done["data"]["score"]["total"] == 85
    [fault] = capture.wait("s-bad", "session.failed")
    assert fault["type"] == "io.lablet.grading.session.failed"
    assert fault["data"]["error"] == "collector lost the console"
    engine.control("POST", "/grading/s-ok/complete", expect=409, json={})  # nothing is being graded any more


def test_scripted_outcomes_fail_or_hang_grading(engine, capture):
    engine.create("s-fail")
    engine.create("s-hang")
    engine.control("POST", "/grading/outcomes", expect=201, json={"outcome": "fail", "session_id": "s-fail"})
    engine.control("POST", "/grading/outcomes", expect=201, json={"outcome": "hang", "session_id": "s-hang"})
    engine.control("POST", "/grading/outcomes", expect=400, json={"outcome": "explode"})

    engine.call("POST", "/sessions/s-fail/parts/DEMO-LAB-1/grade", expect=202)
    engine.call("POST", "/sessions/s-hang/parts/DEMO-LAB-1/grade", expect=202)
    engine.control("POST", "/clock", json={"advance": 120})  # well past any delay, within the token's life

    faulted = engine.part("s-fail")
    assert faulted["status"] == "faulted" and "collection failed" in faulted["statusReason"]
    assert len(capture.wait("s-fail", "session.failed")) == 1
    assert engine.part("s-hang")["status"] == "grading"  # grading that never finishes
    assert capture.events("s-hang") == []


def test_parts_and_pods_can_be_added_changed_and_removed(engine):
    engine.create("s-parts")
    session = engine.call("POST", "/sessions/parts", json={"sessionId": "s-parts", "part": {"id": "PART-2"}}).json()
    assert [p["id"] for p in session["parts"]] == ["DEMO-LAB-1", "PART-2"]
    engine.call("POST", "/sessions/parts", expect=400, json={"sessionId": "s-parts", "part": {"id": "PART-2"}})
    engine.call("POST", "/sessions/s-parts/parts/PART-2/pod", json=pod_body())
    changed = pod_body() | {"id": "pod-2"}
    assert engine.call("PUT", "/sessions/s-parts/parts/PART-2/pod", json=changed).json()["parts"][1]["pod"]["id"] == (
        "pod-2"
    )
    engine.call("POST", "/sessions/s-parts/parts/PART-2/pod", expect=422, json={"devices": []})  # pod id required
    assert "pod" not in engine.call("DELETE", "/sessions/s-parts/parts/PART-2/pod").json()["parts"][1]
    assert len(engine.call("DELETE", "/sessions/s-parts/parts/PART-2").json()["parts"]) == 1


def test_rulesets_scoring_and_html_views(engine):
    engine.create("s-views")
    ruleset = engine.call("GET", "/sessions/parts/DEMO-LAB-1/ruleset/grading/rules").json()
    assert ruleset["scoring"]["cutScore"] == 70
    assert ruleset["grading"]["packageMetadata"]["version"] == "1"
    engine.call("POST", "/sessions/parts/ruleset/grading/synchronize", expect=204, json={"partId": "DEMO-LAB-1"})
    requirements = {"rereadScore": 50, "cutScore": 90, "minScore": 10}
    engine.call(
        "PUT",
        "/sessions/parts/ruleset/scoring",
        expect=204,
        json={"partId": "DEMO-LAB-1", "scoringRequirements": requirements},
    )
    engine.call("PUT", "/sessions/parts/ruleset/scoring", expect=400, json={"partId": "DEMO-LAB-1"})
    ruleset = engine.call("GET", "/sessions/parts/DEMO-LAB-1/ruleset/grading/rules").json()
    assert ruleset["scoring"]["cutScore"] == 90 and ruleset["grading"]["packageMetadata"]["version"] == "2"
    guide = engine.call("GET", "/sessions/parts/DEMO-LAB-1/ruleset/grading/guide")
    assert guide.headers["Content-Type"].startswith("text/html") and "Grading guide" in guide.text
    assert "s-views" in engine.call("GET", "/sessions/s-views/score/view").text


def test_event_faults_drop_duplicate_and_delay(engine, capture):
    for session_id in ("e-drop", "e-dup", "e-late"):
        engine.create(session_id)
    engine.control("POST", "/grading/outcomes", expect=201, json={"outcome": "hang", "times": None})
    for session_id in ("e-drop", "e-dup", "e-late"):
        engine.call("POST", f"/sessions/{session_id}/parts/DEMO-LAB-1/grade", expect=202)

    engine.control("POST", "/events/faults", expect=201, json={"mode": "drop"})
    engine.control("POST", "/grading/e-drop/complete", json={})
    engine.control("POST", "/events/faults", expect=201, json={"mode": "duplicate"})
    engine.control("POST", "/grading/e-dup/complete", json={})
    engine.control("POST", "/events/faults", expect=201, json={"mode": "delay", "delay": 0.4})
    started = time.monotonic()
    engine.control("POST", "/grading/e-late/complete", json={})

    assert len(capture.wait("e-late", "completed")) == 1
    assert time.monotonic() - started >= 0.35
    assert len(capture.wait("e-dup", "completed", count=2)) == 2
    assert capture.events("e-drop") == []


def test_injected_faults_apply_per_operation(engine):
    engine.control("POST", "/faults", expect=201, json={"operation": "GetSession", "status": 500, "times": 1})
    engine.create("s-fault")
    problem = engine.call("GET", "/sessions/s-fault", expect=500).json()
    assert problem["code"] == 500
    engine.call("GET", "/sessions/s-fault")
    assert [r["status"] for r in engine.simulator.recorder.list() if r["operation"] == "GetSession"] == [500, 200]
