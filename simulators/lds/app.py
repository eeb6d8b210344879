"""LDS simulator: the Reservations API v3 subset (`lds-reservations-v3-subset.openapi.json`, every one of
its 25 operations) under `/reservations/v3`, with HTTP Basic auth, the session and part state machine of
EXTERNAL-SYSTEMS.md §3.3 and the CloudEvents of §3.4. One instance is one LDS deployment (region); run
several instances for several deployments.

States (names beyond the spec's examples are inferred, §3.3):

    SESSION_PENDING --launch URL fetched--> SESSION_PRELAUNCH --candidate logs in--> SESSION_RUNNING
    SESSION_RUNNING <--pause / resume--> SESSION_PAUSED
    not ended --finish, force_user_finished, refresh_status on the last part--> SESSION_USER_FINISHED
    SESSION_RUNNING --part timer expired--> SESSION_TIMEOUT
    any --release--> SESSION_FINALIZED (is_finalized, no active reservation)

Time-driven steps (auto-login N s after the launch URL was fetched, auto-finish N s after login, timer
expiry) are computed lazily from `self.clock` whenever a session is touched; one wake-up thread only makes
sure the step, and so its CloudEvent, also happens when nobody asks.

Control API, besides the common `/_sim/reset|faults|clock|requests|state`:
  POST   /_sim/sessions/<id>/login   the candidate logs in (as if the launch URL were opened)
  POST   /_sim/sessions/<id>/finish  the candidate finishes
  DELETE /_sim/sessions/<id>         the session vanishes behind the manager's back (404 afterwards)
  PUT    /_sim/catalogue             {"form_qualified_names": [...]}; null = every FQN is known (default)
  PUT    /_sim/webhook               {"url", "secret"}: where CloudEvents go
  GET    /_sim/events                CloudEvents: {"emitted": [...], "sent": [...], "dropped": [...]}
  POST   /_sim/events/faults         {"mode": "drop|duplicate|delay|reorder", "times": 1, "delay": 1.0}
  DELETE /_sim/events/faults
Launch tokens are issued already expired while a fault rule `{"operation": "launch_token",
"expire_tokens": true}` stands (no route has that operation, so the rule is never used up).

The parts: `state` (sessions, parts, the state machine), `api` (the Reservations API and the launch page),
`control` (the LDS control routes); `simulators.common_stateful` has the CloudEvents and wake-up plumbing.
"""

import uuid

from flask import Flask

from simulators.common_stateful import StatefulSimulator, setting
from simulators.lds import api, control
from simulators.lds.state import EVENT_TYPES, LdsSession, LdsStateMachine


class LDSSimulator(LdsStateMachine, StatefulSimulator):
    """A stateful LDS deployment: Basic-auth users, sessions, parts, devices, launch tokens and CloudEvents."""

    name = "lds"

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        catalogue: list[str] | None = None,
        event_prefix: str | None = None,
        event_types: dict[str, str] | None = None,
        source: str = "urn:lcm:simulators:lds",
        **options,
    ):
        """`users`: Basic-auth user -> password; `catalogue`: the known form qualified names (None = all);
        `options`: `zero_delay`, `timings`, `seed`, `webhook_url`, `webhook_secret` (see StatefulSimulator)."""
        if users is None:
            username = setting("LCM_LDS_CLIENT_ID", "LCM_LDS_CLIENT_ID", "lcm")
            users = {username: setting("LCM_LDS_CLIENT_SECRET", "LCM_LDS_CLIENT_SECRET", "local-lds-secret")}
        self.users = dict(users)
        self.initial_catalogue = list(catalogue) if catalogue is not None else None
        self.signing_key = uuid.uuid4().hex + uuid.uuid4().hex
        prefix = event_prefix or setting("LCM_LDS_EVENT_PREFIX", "LCM_LDS_EVENT_PREFIX", "io.lablet.lds")
        family = "com.cisco" if prefix.startswith("com.cisco") else "io.lablet"
        self.event_types = EVENT_TYPES[family] | (event_types or {})
        self.sessions: dict[str, LdsSession] = {}
        self.catalogue: dict[str, dict] = {}
        self.open_catalogue = True
        super().__init__(source=source, prefix=prefix, **options)

    def default_timings(self) -> dict:
        # Delays (`*_after`) collapse to 0 in zero-delay mode; None switches the step off. Lifetimes and
        # lengths are not delays and keep their values.
        return {
            "auto_login_after": None,
            "auto_finish_after": None,
            "launch_token_ttl": 3600,
            "session_minutes": 60,
        }

    def register_routes(self, app: Flask) -> None:
        api.register(self, app)
        control.register(self, app)
        self.events.register_control_api(app)

    def reset_state(self) -> None:
        with self.lock:
            self.sessions = {}
            self.open_catalogue = self.initial_catalogue is None
            self.catalogue = {}
            for fqn in self.initial_catalogue or []:
                self.catalogue[fqn] = self._lab_folder(fqn)
        self.events.reset()

    def control_state(self) -> dict:
        return {
            "sessions": {
                s.id: {
                    "state": s.state,
                    "is_finalized": s.is_finalized,
                    "parts": [{"state": p.state, "devices": len(p.devices)} for p in s.parts],
                }
                for s in self.sessions.values()
            },
            "catalogue": None if self.open_catalogue else sorted(self.catalogue),
        }
