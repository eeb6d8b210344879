"""The OIDC simulator as LCM's identity provider (SPEC §12): `oidc_provider` serves one in this process on a
free port, with the tests' control token, and points LCM's LCM_OIDC_* settings at its realm."""

from dataclasses import dataclass

import pytest

from lcm import oidc
from simulators.common import ServerThread
from simulators.oidc import OIDCSimulator
from tests.support.simulators import SIM_TOKEN, sim_control

CLIENT_ID = "lcm-tests"
CLIENT_SECRET = "tests-oidc-client-secret"
ADMIN_GROUP = "lcm-platform-admins"
INSTRUCTOR_GROUP = "lcm-instructors"
USERS = {
    "ada": {"groups": ["/" + ADMIN_GROUP], "email": "ada@example.com", "name": "Ada Admin"},
    "ian": {"groups": [INSTRUCTOR_GROUP, "everyone"], "email": "ian@example.com", "name": "Ian Instructor"},
    "nobody": {"groups": ["everyone"], "email": "nobody@example.com", "name": "No Group"},
}


@dataclass
class Provider:
    url: str
    issuer: str
    simulator: OIDCSimulator

    def control(self, method: str, path: str, **kwargs):
        response = sim_control.request(method, f"{self.url}/_sim/{path}", timeout=5, **kwargs)
        response.raise_for_status()
        return response.json()

    def tamper(self, mode: str | None) -> None:
        self.control("PUT", "id-token", json={"tamper": mode})


@pytest.fixture
def oidc_provider(settings):
    simulator = OIDCSimulator(
        realm="lcm",
        users=USERS,
        clients={CLIENT_ID: {"secret": CLIENT_SECRET, "redirect_uris": None}},
        control_token=SIM_TOKEN,
    )
    server = ServerThread(simulator.app).start()
    issuer = f"{server.url}/realms/lcm"
    settings.LCM_OIDC_ISSUER = issuer
    settings.LCM_OIDC_CLIENT_ID = CLIENT_ID
    settings.LCM_OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.LCM_OIDC_ADMIN_GROUP = ADMIN_GROUP
    settings.LCM_OIDC_INSTRUCTOR_GROUP = INSTRUCTOR_GROUP
    oidc.forget_provider()
    yield Provider(server.url, issuer, simulator)
    server.stop()
    oidc.forget_provider()
