"""The LDS simulator: Basic auth, the session/part state machine (EXTERNAL-SYSTEMS.md §3.3), launch tokens,
CloudEvents to the webhook (§3.4) and its control API. The client's flow and the contract check against the
official spec are in tests/sessions/test_lds_client.py."""

import base64
import time

import pytest
import requests

from simulators.common import ServerThread
from simulators.lds import LDSSimulator
from tests.support.simulators import sim_control

API = "/reservations/v3"
SECRET = "test-webhook-secret"
AUTH = ("lcm", "lds-test-password")


@pytest.fixture(scope="module")
def lds_server(capture):
    simulator = LDSSimulator(
        zero_delay=True, seed=1, users=dict([AUTH]), webhook_url=capture.url, webhook_secret=SECRET
    )
    server = ServerThread(simulator.app).start()
    yield simulator, server.url
    server.stop()


class Lds:
    """The simulator plus a Basic-auth HTTP session against it."""

    def __init__(self, simulator: LDSSimulator, url: str):
        self.simulator = simulator
        self.url = url
        self.http = requests.Session()
        self.http.auth = AUTH

    def call(self, method: str, path: str, expect: int = 200, **kwargs) -> requests.Response:
        response = self.http.request(method, self.url + API + path, timeout=5, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response

    def control(self, method: str, path: str, expect: int = 200, **kwargs) -> dict:
        response = requests.request(method, f"{self.url}/_sim{path}", timeout=5, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response.json()

    def create(self, **changes) -> str:
        body = session_body() | changes
        return self.call("POST", "/lab_session", json=body).json()["session_id"]

    def get(self, session_id: str) -> dict:
        return self.call("GET", f"/lab_session/{session_id}").json()

    def login(self, session_id: str) -> dict:
        return self.control("POST", f"/sessions/{session_id}/login")


@pytest.fixture
def lds(lds_server):
    simulator, url = lds_server
    saved = dict(simulator.timings)
    sim_control.post(f"{url}/_sim/reset", timeout=5)
    yield Lds(simulator, url)
    simulator.timings = saved


def session_body(**parts) -> dict:
    return {
        "origin": "lcm",
        "auth_id": "candidate-1",
        "auth_id_type": "ordered_session",
        "candidate_id": "candidate-1",
        "location": "cloud",
        "timezone_offset": 0,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "rack_group": "lcm",
        "rack_number": 1,
        "scheduled_date": "2030-01-01T09:00:00Z",
        "session_parts": [{"repository_type": "minio", "form_qualified_name": "DEMO-LAB-1"}],
    } | parts


# -- auth and validation ---------------------------------------------------------------------


def test_every_operation_needs_basic_credentials(lds):
    url = f"{lds.url}{API}/lab_session"
    anonymous = requests.post(url, json=session_body(), timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.post(url, json=session_body(), auth=("lcm", "wrong"), timeout=5).status_code == 401
    assert requests.get(f"{url}/00000000-0000-0000-0000-000000000000", timeout=5).status_code == 401
    assert lds.simulator.sessions == {}


def test_create_rejects_missing_fields_bad_types_and_missing_json(lds):
    body = session_body()
    del body["candidate_id"]
    missing = lds.call("POST", "/lab_session", expect=400, json=body).json()
    assert "candidate_id" in missing["description"]
    lds.call("POST", "/lab_session", expect=400, json=session_body(timezone_offset="UTC"))
    lds.call("POST", "/lab_session", expect=400, json=session_body(scheduled_date="next tuesday"))
    lds.call("POST", "/lab_session", expect=400, json=session_body(session_parts=[{"repository_type": "minio"}]))
    lds.call("POST", "/lab_session", expect=415, data="origin=lcm")


def test_a_new_session_is_pending_with_one_pending_part(lds):
    session_id = lds.create(max_length_minutes=45)
    session = lds.get(session_id)
    assert session["id"] == session_id
    assert session["state"] == "SESSION_PENDING"
    assert session["is_finalized"] is False and session["active_reservation"] is True
    assert session["log_id"] == f"SID={session_id}"
    assert session["rack_number"] == "1"  # sent as the integer of the upstream examples, answered as the string type
    assert "max_length_minutes" not in session  # write-only
    assert session["practice_lab"]["max_length_minutes"] == 45
    assert session["current_session_part"] == 1
    [part] = session["session_parts"]
    assert part["session_part_state"] == "SESSION_PART_PENDING"
    assert part["form_qualified_name"] == "DEMO-LAB-1"
    assert "timer" not in part  # the part timer starts at login
    assert lds.call("GET", "/lab_session", params={"state": "session_pending"}).json() == {
        "latest_session_id": session_id,
        "state": "SESSION_PENDING",
    }


def test_devices_are_validated_and_replaced_as_a_whole(lds):
    session_id = lds.create()
    path = f"/lab_session/{session_id}/part/1/devices"
    first = [
        {"device_label": "router", "protocol": "telnet", "host": "10.0.0.5", "port": 5041},
        {"device_label": "desktop", "protocol": "vnc", "host": "10.0.0.5", "port": 5044, "password": "pw"},
    ]
    assert lds.call("PUT", path, json=first).json()[0] == {**first[0], "password": None}
    lds.call("PUT", path, json=[{"device_label": "router", "protocol": "telnet"}], expect=400)  # no host
    lds.call("PUT", path, json=[{"device_label": "r", "protocol": "ssh", "host": "h", "port": "22"}], expect=400)
    lds.call("PUT", path, json=first[:1])
    assert [d["device_label"] for d in lds.call("GET", path).json()] == ["router"]
    lds.call("PUT", f"/lab_session/{session_id}/part/2/devices", json=first, expect=404)


def test_an_unknown_form_is_refused_when_the_catalogue_is_closed(lds):
    lds.control("PUT", "/catalogue", json={"form_qualified_names": ["KNOWN-1"]})
    lds.call("POST", "/lab_session", expect=404, json=session_body())
    lds.call("GET", "/lab_folder/minio/DEMO-LAB-1", expect=404)
    known = session_body(session_parts=[{"repository_type": "minio", "form_qualified_name": "KNOWN-1"}])
    lds.call("POST", "/lab_session", json=known)


def test_content_refresh_bumps_the_version(lds):
    assert lds.call("GET", "/lab_folder/minio/DEMO-LAB-1").json()["Version"] == "1"
    assert lds.call("PUT", "/lab_folder/minio/DEMO-LAB-1").json()["Version"] == "2"
    assert lds.call("GET", "/lab_folder/minio/DEMO-LAB-1/validate").json()["is_valid"] is True


# -- launch URL, login, finish and their CloudEvents -------------------------------------------


def test_opening_the_launch_url_logs_in_and_emits_running(lds, capture):
    session_id = lds.create()
    url = lds.call("GET", f"/lab_session/{session_id}/lablet_launch_url").json()["url"]
    assert url.startswith(f"{lds.url}/lablet/launch?token=")
    assert lds.get(session_id)["state"] == "SESSION_PRELAUNCH"

    page = requests.get(url, timeout=5)

    assert page.status_code == 200
    session = lds.get(session_id)
    assert session["state"] == "SESSION_RUNNING"
    assert session["session_parts"][0]["session_part_state"] == "SESSION_PART_RUNNING"
    assert "max_ends_at" in session["session_parts"][0]["timer"]
    [event] = capture.wait(session_id, "session.running.v1")
    [delivery] = [r for r in capture.received if r["event"]["id"] == event["id"]]
    assert delivery["content_type"] == "application/cloudevents+json"  # structured mode
    assert delivery["headers"]["X-Lcm-Webhook-Secret"] == SECRET
    assert event["specversion"] == "1.0"
    assert event["type"] == "io.lablet.lds.session.running.v1"
    assert event["data"]["sessionId"] == event["data"]["aggregateId"] == session_id


def test_an_expired_or_forged_launch_token_is_refused(lds):
    session_id = lds.create()
    url = lds.call("GET", f"/lab_session/{session_id}/lablet_launch_url").json()["url"]
    assert requests.get(url + "x", timeout=5).status_code == 401
    lds.control("POST", "/clock", json={"advance": 3601})
    assert requests.get(url, timeout=5).status_code == 401
    assert lds.get(session_id)["state"] == "SESSION_PRELAUNCH"
    fresh = lds.call("GET", f"/lab_session/{session_id}/lablet_launch_url").json()["url"]  # issued on the moved clock
    assert requests.get(fresh, timeout=5).status_code == 200


def test_an_injected_expiry_issues_launch_tokens_that_are_already_expired(lds):
    session_id = lds.create()
    lds.control("POST", "/faults", expect=201, json={"operation": "launch_token", "expire_tokens": True})
    url = lds.call("GET", f"/lab_session/{session_id}/lablet_launch_url").json()["url"]
    assert requests.get(url, timeout=5).status_code == 401
    sim_control.delete(f"{lds.url}/_sim/faults", timeout=5)
    url = lds.call("GET", f"/lab_session/{session_id}/lablet_launch_url").json()["url"]
    assert requests.get(url, timeout=5).status_code == 200


def test_control_login_then_finish_emit_running_then_ended(lds, capture):
    session_id = lds.create()
    assert lds.login(session_id)["state"] == "SESSION_RUNNING"
    lds.login(session_id)  # a second login changes nothing and emits nothing
    finished = lds.control("POST", f"/sessions/{session_id}/finish")

    assert finished["state"] == "SESSION_USER_FINISHED"
    assert finished["session_parts"][0]["session_part_state"] == "SESSION_PART_USER_FINISHED"
    assert len(capture.wait(session_id, "session.running.v1")) == 1
    [ended] = capture.wait(session_id, "session.ended.v1")
    assert ended["data"]["endedBy"] == "user"
    assert [e["type"].rsplit(".", 2)[-2] for e in capture.events(session_id)] == ["running", "ended"]
    statuses = lds.call("GET", f"/lab_session/{session_id}/statuses").json()
    assert [s["new_status"] for s in statuses["session_statuses"]] == [
        "SESSION_PENDING",
        "SESSION_RUNNING",
        "SESSION_USER_FINISHED",
    ]
    assert all(isinstance(s["timestamp"], int) for s in statuses["session_part_statuses"])
    lds.control("POST", f"/sessions/{session_id}/finish", expect=409)


def test_pause_and_resume_only_from_running_and_the_timer_stops_while_paused(lds, capture):
    session_id = lds.create()
    lds.call("PUT", f"/lab_session/{session_id}/pause", expect=409)
    ends_before = lds.login(session_id)["session_parts"][0]["timer"]["max_ends_at"]

    lds.call("PUT", f"/lab_session/{session_id}/pause", expect=204)
    paused = lds.get(session_id)
    assert paused["state"] == "SESSION_PAUSED" and paused["timer_paused"] is True
    lds.control("POST", "/clock", json={"advance": 600})
    lds.call("PUT", f"/lab_session/{session_id}/resume", expect=204)

    resumed = lds.get(session_id)
    assert resumed["state"] == "SESSION_RUNNING"
    assert resumed["session_parts"][0]["timer"]["max_ends_at"] > ends_before
    assert len(capture.wait(session_id, "session.paused.v1")) == 1
    assert len(capture.wait(session_id, "session.running.v1", count=2)) == 2
    lds.call("PUT", f"/lab_session/{session_id}/resume", expect=409)


def test_the_part_timer_expires_on_the_clock_and_can_be_extended(lds, capture):
    session_id = lds.create(max_length_minutes=30)
    lds.login(session_id)
    lds.call("PUT", f"/lab_session/{session_id}/part/1/extend", expect=204, json={"time_extension": 15})
    lds.call("PUT", f"/lab_session/{session_id}/part/1/adjust", expect=400, json={"time_adjustment": "5"})
    lds.control("POST", "/clock", json={"advance": 40 * 60})
    assert lds.get(session_id)["state"] == "SESSION_RUNNING"  # 30 + 15 minutes

    lds.control("POST", "/clock", json={"advance": 6 * 60})

    assert lds.get(session_id)["state"] == "SESSION_TIMEOUT"
    [ended] = capture.wait(session_id, "session.ended.v1")
    assert ended["data"]["endedBy"] == "timeout"


def test_auto_login_and_auto_finish_happen_without_anyone_asking(lds, capture):
    lds.simulator.zero_delay = False
    lds.simulator.timings |= {"auto_login_after": 0.2, "auto_finish_after": 0.2}
    try:
        session_id = lds.create()
        lds.call("GET", f"/lab_session/{session_id}/lablet_launch_url")
        assert lds.simulator.sessions[session_id].state == "SESSION_PRELAUNCH"
        # No further request: the simulator's wake-up thread makes both steps (and their events) happen.
        assert len(capture.wait(session_id, "session.running.v1")) == 1
        assert len(capture.wait(session_id, "session.ended.v1")) == 1
    finally:
        lds.simulator.zero_delay = True
    assert lds.simulator.sessions[session_id].state == "SESSION_USER_FINISHED"


def test_refresh_status_and_force_user_finished(lds, capture):
    session_id = lds.create()
    lds.login(session_id)
    lds.call("POST", f"/lab_session/{session_id}/part/2", json={"repository_type": "minio", "form_qualified_name": "B"})
    not_final = lds.call("PUT", f"/lab_session/{session_id}/refresh_status").json()
    assert not_final == {"result": "Not on final LDS Session Part"}

    forced = lds.call("PUT", f"/lab_session/{session_id}/force_user_finished").json()

    assert forced == {"result": "LDS Session Part and LDS Session set user finished"}
    session = lds.get(session_id)
    assert session["state"] == "SESSION_USER_FINISHED"
    assert {p["session_part_state"] for p in session["session_parts"]} == {"SESSION_PART_USER_FINISHED"}
    assert capture.wait(session_id, "session.ended.v1")[0]["data"]["endedBy"] == "admin"


def test_release_finalizes_once_and_refuses_later_changes(lds, capture):
    session_id = lds.create()
    lds.login(session_id)
    lds.call("POST", f"/lab_session/{session_id}/release", expect=415)  # the JSON body is required

    lds.call("POST", f"/lab_session/{session_id}/release", expect=204, json={})
    lds.call("POST", f"/lab_session/{session_id}/release", expect=204, json={})

    session = lds.get(session_id)
    assert session["state"] == "SESSION_FINALIZED"
    assert session["is_finalized"] is True and session["active_reservation"] is False
    assert len(capture.wait(session_id, "session.finalized.v1")) == 1
    lds.call("PUT", f"/lab_session/{session_id}/pause", expect=409)
    lds.call("GET", f"/lab_session/{session_id}/lablet_launch_url", expect=409)


def test_parts_variables_and_responses(lds):
    session_id = lds.create()
    part = f"/lab_session/{session_id}/part"
    lds.call("POST", f"{part}/3", expect=409, json={"repository_type": "minio", "form_qualified_name": "B"})
    added = lds.call("POST", f"{part}/2", json={"repository_type": "minio", "form_qualified_name": "B"}).json()
    assert added["session_part_state"] == "SESSION_PART_PENDING"
    assert lds.call("PUT", f"{part}/2", json={"variables": {"x": 1}}).json()["variables"] == {"x": 1}
    lds.call("DELETE", f"{part}/2", expect=204)
    lds.call("GET", f"{part}/2", expect=404)

    lds.call("PUT", f"{part}/1/variables", json={"a": "1"})
    assert lds.call("PUT", f"{part}/1/variables", json={"b": 2}).json() == {"variables": {"a": "1", "b": 2}}
    assert lds.call("GET", f"{part}/1/collect").json() == {"sections": {}}


def test_patch_changes_writable_fields_only(lds):
    session_id = lds.create()
    patched = lds.call("PATCH", f"/lab_session/{session_id}", json={"first_name": "Grace", "state": "X"}).json()
    assert patched["first_name"] == "Grace"
    assert patched["state"] == "SESSION_PENDING"


# -- failure injection and the control API ---------------------------------------------------


def test_a_session_can_vanish_behind_the_managers_back(lds):
    session_id = lds.create()
    lds.control("DELETE", f"/sessions/{session_id}")
    lds.call("GET", f"/lab_session/{session_id}", expect=404)
    lds.call("POST", f"/lab_session/{session_id}/release", expect=404, json={})
    lds.control("POST", f"/sessions/{session_id}/login", expect=404)


def test_injected_status_and_delay_are_recorded(lds):
    lds.control("POST", "/faults", expect=201, json={"operation": "getLDSSession", "status": 503, "times": 1})
    lds.control("POST", "/faults", expect=201, json={"operation": "postLDSSession", "delay": 0.3, "times": 1})
    started = time.monotonic()
    session_id = lds.create()
    assert time.monotonic() - started >= 0.3
    lds.call("GET", f"/lab_session/{session_id}", expect=503)
    lds.call("GET", f"/lab_session/{session_id}")
    records = lds.simulator.recorder.list()
    assert [(r["operation"], r["status"]) for r in records] == [
        ("postLDSSession", 200),
        ("getLDSSession", 503),
        ("getLDSSession", 200),
    ]
    assert records[0]["headers"]["Authorization"] == "Basic <redacted>"  # the scheme, never the secret


def test_event_faults_drop_duplicate_and_reorder(lds, capture):
    dropped, duplicated, held, overtaking = (lds.create() for _ in range(4))
    lds.control("POST", "/events/faults", expect=201, json={"mode": "drop"})
    lds.login(dropped)
    lds.control("POST", "/events/faults", expect=201, json={"mode": "duplicate"})
    lds.login(duplicated)
    lds.control("POST", "/events/faults", expect=201, json={"mode": "reorder"})
    lds.login(held)
    lds.login(overtaking)

    assert len(capture.wait(duplicated, "running.v1", count=2)) == 2
    assert len({e["id"] for e in capture.events(duplicated)}) == 1  # a duplicate keeps its id
    capture.wait(held, "running.v1")
    order = [r["event"]["subject"] for r in capture.received if r["event"]["subject"] in (held, overtaking)]
    assert order == [overtaking, held]
    assert capture.events(dropped) == []
    assert [e["subject"] for e in lds.control("GET", "/events")["dropped"]] == [dropped]
    lds.control("POST", "/events/faults", expect=400, json={"mode": "explode"})


def test_the_cisco_naming_family_follows_the_prefix(capture):
    simulator = LDSSimulator(
        zero_delay=True,
        users=dict([AUTH]),
        webhook_url=capture.url,
        webhook_secret=SECRET,
        event_prefix="com.cisco.certs.lds",
    )
    client = simulator.app.test_client()
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()}
    session_id = client.post(f"{API}/lab_session", json=session_body(), headers=headers).json["session_id"]
    client.post(f"/_sim/sessions/{session_id}/login")
    client.post(f"/_sim/sessions/{session_id}/finish")
    assert [e["type"] for e in capture.wait(session_id, "", count=2)] == [
        "com.cisco.certs.lds.session.running.v1",
        "com.cisco.certs.lds.session.userfinished.v1",
    ]


def test_reset_forgets_sessions_faults_and_records(lds):
    session_id = lds.create()
    lds.control("POST", "/faults", expect=201, json={"operation": "*", "status": 500, "times": None})
    lds.control("POST", "/reset")
    assert lds.control("GET", "/state")["sessions"] == {}
    lds.call("GET", f"/lab_session/{session_id}", expect=404)
    assert len(lds.simulator.recorder.list()) == 1
