"""The LDS client against the LDS simulator: the manager's whole flow, every operation checked against the
official spec (`lds-reservations-v3-subset.openapi.json`), and faults surfacing as the typed errors of
`lcm.http`."""

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from lcm.http import AuthExpired, BadRequest, Conflict, ExternalError, NotFound, Timeout, Timeouts, Unavailable
from sessions.clients import Device, LDSClient, lds_client
from simulators.common import ServerThread
from simulators.lds import LDSSimulator
from tests.contract import openapi, request_errors, response_errors
from tests.support.simulators import sim_control

SPEC = "lds-reservations-v3-subset.openapi.json"
AUTH = ("lcm", "lds-test-password")
FQN = "DEMO-LAB-1"


@pytest.fixture(scope="module")
def lds_server():
    simulator = LDSSimulator(zero_delay=True, seed=3, users=dict([AUTH]), webhook_url="")
    server = ServerThread(simulator.app).start()
    yield simulator, server.url
    server.stop()


class Lds:
    def __init__(self, simulator: LDSSimulator, url: str):
        self.simulator = simulator
        self.url = url

    def client(self, **options) -> LDSClient:
        defaults = {"timeouts": Timeouts(connect=1, read=2), "retries": 2, "backoff": 0.01, "backoff_max": 0.05}
        return LDSClient(self.url, *AUTH, **(defaults | options))

    def fault(self, **rule) -> None:
        sim_control.post(f"{self.url}/_sim/faults", json=rule, timeout=5).raise_for_status()

    def records(self, operation: str) -> list[dict]:
        return [r for r in self.simulator.recorder.list() if r["operation"] == operation]


@pytest.fixture
def lds(lds_server):
    simulator, url = lds_server
    sim_control.post(f"{url}/_sim/reset", timeout=5)
    simulator.users = dict([AUTH])
    return Lds(simulator, url)


def new_session(client: LDSClient) -> str:
    return client.create_session(
        candidate_id="candidate-1", form_qualified_name=FQN, first_name="Ada", last_name="Lovelace"
    ).session_id


# -- the whole flow and the contract ---------------------------------------------------------


def test_the_whole_flow_speaks_the_official_spec(lds, shared_specs):
    client = lds.client()
    assert client.get_content(FQN)["FormName"] == FQN
    assert client.refresh_content(FQN)["Version"] == "2"
    assert client.validate_content(FQN)["is_valid"] is True

    created = client.create_session(
        candidate_id="candidate-1",
        form_qualified_name=FQN,
        first_name="Ada",
        last_name="Lovelace",
        email_address="ada@example.com",
        max_length_minutes=60,
        user_timeslot_end=datetime.now(UTC) + timedelta(hours=1),
    )
    session_id = created.session_id
    assert created.location.endswith(f"/lab_session/{session_id}")
    devices = [
        Device("router", "telnet", "10.0.0.5", 5041),
        {"label": "desktop", "protocol": "vnc", "host": "10.0.0.5", "port": 5044, "password": "vnc-pw"},
    ]
    assert [d["device_label"] for d in client.set_devices(session_id, devices)] == ["router", "desktop"]
    assert client.get_devices(session_id)[1]["password"] == "vnc-pw"
    launch = client.launch_url(session_id)
    assert client.get_session(session_id)["state"] == "SESSION_PRELAUNCH"
    assert client.latest_session_for_state("SESSION_PRELAUNCH")["latest_session_id"] == session_id
    assert client.update_session(session_id, last_name="Byron")["last_name"] == "Byron"

    assert requests.get(launch, timeout=5).status_code == 200  # the candidate opens the lab
    assert client.get_session(session_id)["state"] == "SESSION_RUNNING"
    client.pause(session_id)
    assert client.get_session(session_id)["timer_paused"] is True
    client.resume(session_id)
    assert client.set_variables(session_id, {"hostname": "r1"}) == {"hostname": "r1"}
    assert client.get_variables(session_id) == {"hostname": "r1"}
    client.extend_part(session_id, 10)
    client.adjust_part(session_id, -5)
    assert client.collect_responses(session_id) == {}
    assert client.get_part(session_id)["session_part_state"] == "SESSION_PART_RUNNING"
    assert client.add_part(session_id, 2, "DEMO-LAB-2")["session_part_state"] == "SESSION_PART_PENDING"
    assert client.update_part(session_id, 2, variables={"x": "1"})["variables"] == {"x": "1"}
    assert client.refresh_status(session_id) == "Not on final LDS Session Part"
    client.delete_part(session_id, 2)
    assert client.force_user_finished(session_id) == "LDS Session Part and LDS Session set user finished"
    assert [s["new_status"] for s in client.statuses(session_id)["session_statuses"]][-1] == "SESSION_USER_FINISHED"
    client.release(session_id)
    assert client.get_session(session_id)["is_finalized"] is True

    api = openapi(SPEC, server_url=lds.url)
    records = lds.simulator.recorder.list()
    problems = [
        (r["operation"], r["method"], r["path"], r["status"], errors)
        for r in records
        if (errors := request_errors(api, r, lds.url) + response_errors(api, r, lds.url))
    ]
    assert problems == []
    spec_operations = {
        operation["operationId"]
        for path_item in json.loads((shared_specs / SPEC).read_text())["paths"].values()
        for operation in path_item.values()
    }
    covered = {r["operation"] for r in records}
    print(f"\nLDS: {len(covered)} of {len(spec_operations)} operations validated against {SPEC}")
    assert covered == spec_operations
    assert len(covered) == 25


def test_launch_urls_are_moved_to_the_browser_facing_base_url(lds):
    client = lds.client(public_base_url="https://lds.example.com/")
    url = client.launch_url(new_session(client))
    assert url.startswith("https://lds.example.com/lablet/launch?token=")


def test_the_factory_reads_the_settings(lds, settings):
    settings.LCM_LDS_BASE_URL = lds.url
    settings.LCM_LDS_CLIENT_ID, settings.LCM_LDS_CLIENT_SECRET = AUTH
    settings.LCM_HTTP_READ_TIMEOUT = 4.0
    client = lds_client()
    assert client.timeouts.read == 4.0
    assert client.get_session(new_session(client))["candidate_id"] == "candidate-1"


# -- faults ------------------------------------------------------------------------------------


def test_5xx_then_success_is_retried_for_idempotent_calls(lds):
    client = lds.client()
    session_id = new_session(client)
    lds.fault(operation="getLDSSession", status=503, times=2)
    lds.fault(operation="putLDSSessionFinalize", status=500, times=1)

    assert client.get_session(session_id)["id"] == session_id
    client.release(session_id)  # a POST, but releasing twice is harmless, so it is retried too

    assert [r["status"] for r in lds.records("getLDSSession")] == [503, 503, 200]
    assert [r["status"] for r in lds.records("putLDSSessionFinalize")] == [500, 204]


def test_5xx_on_create_is_not_retried(lds):
    lds.fault(operation="postLDSSession", status=502, times=1)
    with pytest.raises(Unavailable) as error:
        new_session(lds.client())
    assert error.value.status == 502
    assert len(lds.records("postLDSSession")) == 1
    assert lds.simulator.sessions == {}


def test_5xx_beyond_the_retries_is_unavailable(lds):
    client = lds.client(retries=1)
    session_id = new_session(client)
    lds.fault(operation="getLDSSession", status=500, times=None)
    with pytest.raises(Unavailable):
        client.get_session(session_id)
    assert len(lds.records("getLDSSession")) == 2


def test_a_delay_beyond_the_timeout_returns_within_the_timeout(lds):
    client = lds.client(timeouts=Timeouts(connect=1, read=0.5))
    session_id = new_session(client)
    lds.fault(operation="getLDSSession", delay=1.5, times=1)
    started = time.monotonic()
    with pytest.raises(Timeout):
        client.get_session(session_id)
    assert time.monotonic() - started < 0.5 + 1


def test_a_401_mid_flow_is_retried_once_with_fresh_credentials(lds):
    rotated = ("lcm", "rotated-password")
    client = lds.client(credentials=lambda: rotated)
    session_id = new_session(client)
    lds.simulator.users = dict([rotated])  # the password changed behind the client's back

    client.set_devices(session_id, [Device("router", "telnet", "10.0.0.5", 5041)])

    assert [r["status"] for r in lds.records("putLDSSessionPartDevice")] == [401, 200]
    lds.fault(operation="getLDSSession", status=401, times=1)  # a one-off refusal passes the same way
    assert client.get_session(session_id)["id"] == session_id


def test_a_second_401_is_auth_expired(lds):
    client = lds.client()
    session_id = new_session(client)
    lds.fault(operation="getLDSSession", status=401, times=2)
    with pytest.raises(AuthExpired):
        client.get_session(session_id)
    assert len(lds.records("getLDSSession")) == 2
    with pytest.raises(AuthExpired):
        LDSClient(lds.url, "lcm", "wrong", retries=0).get_session(session_id)


def test_hard_failures_are_typed(lds):
    client = lds.client()
    session_id = new_session(client)
    with pytest.raises(NotFound):
        client.get_session("00000000-0000-4000-8000-000000000000")
    with pytest.raises(Conflict):
        client.pause(session_id)  # not running yet
    with pytest.raises(BadRequest):
        client.set_devices(session_id, [{"label": "router", "protocol": "telnet", "host": ""}])
    sim_control.delete(f"{lds.url}/_sim/sessions/{session_id}", timeout=5)
    with pytest.raises(NotFound):
        client.release(session_id)  # vanished behind the manager's back


def test_a_dead_port_is_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = LDSClient(f"http://127.0.0.1:{port}", *AUTH, retries=1, backoff=0.01, timeouts=Timeouts(1, 1))
    with pytest.raises(Unavailable) as error:
        client.get_session("00000000-0000-4000-8000-000000000000")
    assert error.value.status is None


@pytest.mark.parametrize("answer", [{"url": "javascript:alert(1)"}, {"url": "data:text/html,x"}, {"url": 7}, {}, []])
def test_a_launch_url_that_is_not_http_is_a_bad_answer(lds, answer):
    client = lds.client()
    session_id = new_session(client)
    lds.fault(operation="getLDSSessionLabletLaunchURL", status=200, body=answer)
    with pytest.raises(ExternalError) as error:
        client.launch_url(session_id)
    assert "launch URL" in error.value.detail
