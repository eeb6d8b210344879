"""Grading Engine simulator: the API v1 of `grading-engine-openapi.json` (all 15 operations) under
`/api/v1`, a Keycloak-style client-credentials token endpoint, asynchronous grading and the CloudEvents of
EXTERNAL-SYSTEMS.md §4.6.

Authentication: `POST /realms/<realm>/protocol/openid-connect/token` (form `grant_type=client_credentials`,
`client_id`, `client_secret`, `scope`; or the client as HTTP Basic) issues a signed JWT (HS256, `exp` after
`token_ttl` seconds of `self.clock`). The API answers `401` (no body) to a missing, expired or revoked token
and `403` (no body) to a token without the `api` scope.

Part lifecycle (inferred vocabulary, §4.4): created --grade--> grading --(after `grading_delay`)--> reviewing
(score report) or faulted (`statusReason`); reviewing --submit--> locked. A locked part refuses re-grading.
Grading finishes lazily from `self.clock` whenever the session is touched, and a wake-up thread makes it
finish (and emit its CloudEvent) also when nobody asks.

The outcome of a grading job is, in order: a scripted outcome (`/_sim/grading/outcomes`), else a score of
`score` (fixed) or a seeded-random score. Scores fill the fixture ruleset's items in order.

Control API, besides the common `/_sim/reset|faults|clock|requests|state`:
  POST   /_sim/grading/<session id>/complete  {"score"?, "part_id"?}: finish grading now with a score report
  POST   /_sim/grading/<session id>/fail      {"reason"?, "part_id"?}: finish grading now as faulted
  POST   /_sim/grading/outcomes               {"outcome": "complete|fail|hang", "score"?, "reason"?,
                                               "session_id"?, "part_id"?, "times"?: 1 (null = until cleared)}
  DELETE /_sim/grading/outcomes
  POST   /_sim/tokens/revoke                  every issued token is refused from now on (401 mid-flow)
  PUT    /_sim/webhook, GET /_sim/events, POST|DELETE /_sim/events/faults  (common_stateful.EventChannel)
Tokens are issued already expired while a fault rule `{"operation": "tokens", "expire_tokens": true}` stands.

The parts: `state` (sessions, parts, grading jobs, score reports), `api` (the API v1 and the token endpoint),
`control` (the grading control routes); `simulators.common_stateful` has the CloudEvents and wake-up plumbing.
"""

import copy
import random
import uuid

from flask import Flask

from simulators.common_stateful import StatefulSimulator, setting
from simulators.grading import api, control
from simulators.grading.state import DEFAULT_RULESET, DEFAULT_SCORING, GradingStateMachine


class GradingSimulator(GradingStateMachine, StatefulSimulator):
    """A stateful Grading Engine: OAuth2 clients and tokens, sessions, parts, pods and grading jobs."""

    name = "grading"

    def __init__(
        self,
        *,
        clients: dict[str, str | dict] | None = None,
        realm: str | None = None,
        score: int | None = None,
        ruleset: dict | None = None,
        scoring: dict | None = None,
        seed: int | None = None,
        event_prefix: str | None = None,
        event_types: dict[str, str] | None = None,
        source: str = "urn:lcm:simulators:grading",
        **options,
    ):
        """`clients`: client id -> secret (scope `api`) or {"secret", "scopes": [...]}; `score`: a fixed score
        for every grading job (None = seeded random); `ruleset`/`scoring`: the fixture every part gets;
        `options`: `zero_delay`, `timings`, `webhook_url`, `webhook_secret` (see StatefulSimulator)."""
        if clients is None:
            client_id = setting("LCM_GRADING_CLIENT_ID", "LCM_GRADING_CLIENT_ID", "lcm")
            clients = {
                client_id: setting("LCM_GRADING_CLIENT_SECRET", "LCM_GRADING_CLIENT_SECRET", "local-grading-secret")
            }
        self.clients = {
            cid: {"secret": c, "scopes": ["api"]} if isinstance(c, str) else {"scopes": ["api"]} | c
            for cid, c in clients.items()
        }
        self.realm = realm or setting("LCM_GRADING_REALM", "LCM_GRADING_REALM", "lcm")
        self.fixed_score = score
        self.seed = seed
        self.ruleset_fixture = copy.deepcopy(ruleset or DEFAULT_RULESET)
        self.scoring_fixture = dict(scoring or DEFAULT_SCORING)
        self.signing_key = uuid.uuid4().hex + uuid.uuid4().hex
        prefix = event_prefix or setting("LCM_GRADING_EVENT_PREFIX", "LCM_GRADING_EVENT_PREFIX", "io.lablet.grading")
        self.event_types = {"completed": "session.completed", "failed": "session.failed"} | (event_types or {})
        self.sessions: dict[str, dict] = {}
        self.jobs: dict[tuple[str, str], dict] = {}
        self.outcomes: list[dict] = []
        self.toolkits: dict[str, dict] = {}
        self.active_tokens: set[str] = set()
        self.random = random.Random(seed)
        super().__init__(source=source, prefix=prefix, seed=seed, **options)

    def default_timings(self) -> dict:
        # `grading_delay` is a delay (0 in zero-delay mode); `token_ttl` is a lifetime and keeps its value.
        return {"grading_delay": 3.0, "token_ttl": 300}

    def register_routes(self, app: Flask) -> None:
        api.register(self, app)
        control.register(self, app)
        self.events.register_control_api(app)

    def reset_state(self) -> None:
        with self.lock:
            self.sessions = {}
            self.jobs = {}
            self.outcomes = []
            self.toolkits = {}
            self.active_tokens = set()
            self.random = random.Random(self.seed)
        self.events.reset()

    def control_state(self) -> dict:
        return {
            "sessions": {
                sid: {"status": s["status"], "parts": {p["id"]: p["status"] for p in s["parts"]}}
                for sid, s in self.sessions.items()
            },
            "outcomes": list(self.outcomes),
            "active_tokens": len(self.active_tokens),
        }
