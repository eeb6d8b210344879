"""Client of the Grading Engine API v1 (`grading-engine-openapi.json`, EXTERNAL-SYSTEMS.md §4).

Authentication: the spec declares OAuth2 (Keycloak, scope `api`); a service gets its token with the
client-credentials grant at the realm's token endpoint (§4.1, inferred). The token is cached until its
`expires_in` minus a margin; a 401 drops it, fetches a new one and retries the call once (the base client),
a second 401 is `AuthExpired`. Errors are the typed errors of `lcm.http`; a 400/422 ProblemDetails becomes
`BadRequest` with the field errors in `.body`.

Paths are under `/api/v1` (the spec has no `servers`; the base URL is configuration).
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from lcm.http import ExternalError, HttpClient, NotFound, Timeouts, TokenCache

API = "/api/v1"


@dataclass(frozen=True)
class SectionScore:
    """One section of a part's score report."""

    id: str
    score: int
    max_score: int
    cut_score: int | None = None  # the section's own pass mark, when the engine sends one


@dataclass(frozen=True)
class PartScore:
    """The score report of one graded part, as far as the manager stores it."""

    score: int
    max_score: int
    generation: int
    revision: int
    sections: tuple[SectionScore, ...]


# Access tokens by (token URL, client id, scope), for the whole process.
_tokens = TokenCache()


def forget_tokens() -> None:
    """Drop every cached Grading Engine token (tests; credentials rotated)."""
    _tokens.clear()


class GradingEngineClient(HttpClient):
    """The Grading Engine: its base URL, OAuth2 client credentials and token endpoint."""

    system = "grading"

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        token_url: str,
        scope: str = "api",
        token_margin: float = 60.0,
        **kwargs,
    ):
        """`token_url`: the Keycloak realm's `/protocol/openid-connect/token` (absolute, or relative to
        `base_url`); `token_margin`: how many seconds before `expires_in` runs out a token is renewed."""
        super().__init__(base_url, **kwargs)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_url = token_url
        self.scope = scope
        self.token_margin = token_margin
        self._token_key = (token_url, client_id, scope)

    # -- auth hooks ----------------------------------------------------------------------

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return super().url(path)

    def _auth_headers(self) -> dict:
        # Renewed `token_margin` seconds before it runs out (`_fetch_token`).
        token = _tokens.get(self._token_key) or self._fetch_token()
        return {"Authorization": f"Bearer {_tokens.carried(token)}"}

    def _reauthenticate(self) -> bool:
        _tokens.drop_carried(self._token_key)
        return True

    def _fetch_token(self) -> str:
        """`POST <realm>/protocol/openid-connect/token` (client-credentials grant): cache the access token."""
        answer = self.json(
            "POST",
            self.token_url,
            operation="token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "scope": self.scope,
            },
            authenticated=False,
            retry_non_idempotent=True,  # asking for a token twice is harmless
        )
        if not isinstance(answer, dict) or not answer.get("access_token"):
            raise ExternalError(self.system, "token", "the token endpoint answered without an access_token")
        lifetime = float(answer.get("expires_in") or 60)
        # Renew `token_margin` seconds early, but never sooner than half way through a short lifetime.
        renew_at = time.monotonic() + max(lifetime - self.token_margin, lifetime / 2)
        return _tokens.put(self._token_key, answer["access_token"], renew_at)

    # -- sessions and parts --------------------------------------------------------------

    def create_session(
        self,
        candidate_id: str,
        *,
        session_id: str | None = None,
        lds_session_id: str | None = None,
        lds_environment: str | None = None,
        part_id: str | None = None,
        pod: dict | None = None,
    ) -> dict:
        """`POST /api/v1/sessions` (CreateSession): a session (with one part `part_id` and its `pod` when
        given); the Session. `session_id` lets the manager choose the id (otherwise the engine generates one)."""
        body: dict = {"candidateId": candidate_id}
        if session_id is not None:
            body["id"] = session_id
        if lds_session_id is not None:
            body["lds"] = {"id": lds_session_id, "environment": lds_environment or ""}
        if part_id is not None:
            part: dict = {"id": part_id}
            if pod is not None:
                part["pod"] = pod
            body["parts"] = [part]
        return self.json("POST", f"{API}/sessions", operation="CreateSession", json=body)

    def get_session(self, session_id: str) -> dict:
        """`GET /api/v1/sessions/{id}` (GetSession): the Session, the source of truth for grading status."""
        return self.json("GET", f"{API}/sessions/{session_id}", operation="GetSession")

    def add_part(self, session_id: str, part_id: str, pod: dict | None = None) -> dict:
        """`POST /api/v1/sessions/parts` (AddPartToSession): add part `part_id`; the Session."""
        part: dict = {"id": part_id}
        if pod is not None:
            part["pod"] = pod
        return self.json(
            "POST", f"{API}/sessions/parts", operation="AddPartToSession", json={"sessionId": session_id, "part": part}
        )

    def remove_part(self, session_id: str, part_id: str) -> dict:
        """`DELETE /api/v1/sessions/{id}/parts/{partId}` (RemovePartFromSession): the Session."""
        return self.json("DELETE", f"{API}/sessions/{session_id}/parts/{part_id}", operation="RemovePartFromSession")

    def assign_pod(self, session_id: str, part_id: str, pod: dict) -> dict:
        """`POST /api/v1/sessions/{id}/parts/{partId}/pod` (AssignSessionPartPod): the Pod itself is the body;
        the Session."""
        return self.json(
            "POST", f"{API}/sessions/{session_id}/parts/{part_id}/pod", operation="AssignSessionPartPod", json=pod
        )

    def update_pod(self, session_id: str, part_id: str, pod: dict) -> dict:
        """`PUT /api/v1/sessions/{id}/parts/{partId}/pod` (UpdateSessionPartPod): the Session."""
        return self.json(
            "PUT", f"{API}/sessions/{session_id}/parts/{part_id}/pod", operation="UpdateSessionPartPod", json=pod
        )

    def unassign_pod(self, session_id: str, part_id: str) -> dict:
        """`DELETE /api/v1/sessions/{id}/parts/{partId}/pod` (UnassignPodFromSessionPart): the Session."""
        return self.json(
            "DELETE", f"{API}/sessions/{session_id}/parts/{part_id}/pod", operation="UnassignPodFromSessionPart"
        )

    def grade(self, session_id: str, part_id: str, *, recollect: bool = False) -> None:
        """`POST /api/v1/sessions/{id}/parts/{partId}/grade` (GradeSessionPart): 202, grading runs in the
        background; learn the result from `get_session` (or a CloudEvent)."""
        self.request(
            "POST",
            f"{API}/sessions/{session_id}/parts/{part_id}/grade",
            operation="GradeSessionPart",
            params={"recollect": "true"} if recollect else None,
        )

    def grade_item(
        self, session_id: str, part_id: str, section_index: int, item_index: int, *, recollect: bool = False
    ) -> None:
        """`POST /api/v1/sessions/{id}/parts/{partId}/sections/{s}/items/{i}/grade` (GradeSessionPartSectionItem):
        202, re-grade one item."""
        self.request(
            "POST",
            f"{API}/sessions/{session_id}/parts/{part_id}/sections/{int(section_index)}/items/{int(item_index)}/grade",
            operation="GradeSessionPartSectionItem",
            params={"recollect": "true"} if recollect else None,
        )

    def submit(self, session_id: str, part_id: str) -> dict:
        """`POST /api/v1/sessions/{id}/parts/{partId}/submit` (SubmitSessionPart): submit the part's score
        (the part is locked afterwards); the Session."""
        return self.json("POST", f"{API}/sessions/{session_id}/parts/{part_id}/submit", operation="SubmitSessionPart")

    def view_score_report(self, session_id: str) -> str:
        """`GET /api/v1/sessions/{id}/score/view` (ViewSessionScoreReport): the score report for humans (HTML)."""
        response = self.request(
            "GET",
            f"{API}/sessions/{session_id}/score/view",
            operation="ViewSessionScoreReport",
            headers={"Accept": "text/html"},
        )
        return response.text

    # -- rulesets ------------------------------------------------------------------------

    def get_ruleset(self, part_id: str) -> dict:
        """`GET /api/v1/sessions/parts/{partId}/ruleset/grading/rules` (DownloadGradingRuleset): the Ruleset
        (grading toolkit and scoring requirements) of a form."""
        return self.json(
            "GET", f"{API}/sessions/parts/{part_id}/ruleset/grading/rules", operation="DownloadGradingRuleset"
        )

    def view_grading_guide(self, part_id: str) -> str:
        """`GET /api/v1/sessions/parts/{partId}/ruleset/grading/guide` (ViewGradingGuide): the guide (HTML)."""
        response = self.request(
            "GET",
            f"{API}/sessions/parts/{part_id}/ruleset/grading/guide",
            operation="ViewGradingGuide",
            headers={"Accept": "text/html"},
        )
        return response.text

    def synchronize_ruleset(self, part_id: str) -> None:
        """`POST /api/v1/sessions/parts/ruleset/grading/synchronize` (SynchronizeGradingToolkit): 204, the
        engine re-reads the form's grading toolkit."""
        self.request(
            "POST",
            f"{API}/sessions/parts/ruleset/grading/synchronize",
            operation="SynchronizeGradingToolkit",
            json={"partId": part_id},
            retry_non_idempotent=True,  # re-reading twice is harmless
        )

    def set_scoring_requirements(
        self, part_id: str, *, cut_score: int, min_score: int, reread_score: int, version: int | None = None
    ) -> None:
        """`PUT /api/v1/sessions/parts/ruleset/scoring` (UpdateScoringRequirements): 204."""
        requirements = {"rereadScore": reread_score, "cutScore": cut_score, "minScore": min_score}
        if version is not None:
            requirements["version"] = version
        self.request(
            "PUT",
            f"{API}/sessions/parts/ruleset/scoring",
            operation="UpdateScoringRequirements",
            json={"partId": part_id, "scoringRequirements": requirements},
        )


# -- reading a Session ---------------------------------------------------------------------


def find_part(session: dict, part_id: str) -> dict:
    """The SessionPart `part_id` of a Session; `NotFound` when the engine no longer has it."""
    for part in session.get("parts") or []:
        if part.get("id") == part_id:
            return part
    raise NotFound("grading", "GetSession", f"session {session.get('id')} has no part {part_id}")


def _int_or_none(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def cut_score_of(ruleset: dict) -> int | None:
    """The cut score of a form's scoring requirements (`scoring.cutScore`), when the engine has one."""
    scoring = ruleset.get("scoring") if isinstance(ruleset, dict) else None
    return _int_or_none(scoring.get("cutScore")) if isinstance(scoring, dict) else None


def part_score(part: dict) -> PartScore | None:
    """The part's score report in the manager's terms, or None while there is none."""
    report = part.get("scoreReport")
    if not report:
        return None
    return PartScore(
        score=int(report.get("score") or 0),
        max_score=int(report.get("maxScore") or 0),
        generation=int(report.get("generation") or 0),
        revision=int(report.get("revision") or 0),
        sections=tuple(
            SectionScore(
                id=str(section.get("id") or index),
                score=int(section.get("score") or 0),
                max_score=int(section.get("maxScore") or 0),
                cut_score=_int_or_none(section.get("cutScore")),
            )
            for index, section in enumerate(report.get("sections") or [], 1)
        ),
    )


def pod_from_devices(pod_id: str, devices: Iterable[dict], *, collector: str) -> dict:
    """A Pod from the manager's device list (`[{label, protocol, host, port}]`, as given to LDS): one Device
    per label, one interface per protocol, no device authentication (EXTERNAL-SYSTEMS.md §4.3, inferred)."""
    by_label: dict[str, dict] = {}
    for device in devices:
        label = device.get("label") or device["device_label"]
        entry = by_label.setdefault(
            label, {"label": label, "hostname": label, "collector": collector, "interfaces": []}
        )
        interface = {"name": device["protocol"], "protocol": device["protocol"], "host": device["host"]}
        if device.get("port") is not None:
            interface["port"] = int(device["port"])
        interface["authentication"] = {"scheme": "none"}
        entry["interfaces"].append(interface)
    return {"id": pod_id, "devices": list(by_label.values())}


def grading_client(**overrides) -> GradingEngineClient:
    """The Grading Engine client configured by settings (LCM_GRADING_*, LCM_HTTP_*); keyword arguments
    override them. Without `LCM_GRADING_TOKEN_URL` the token endpoint is the realm `LCM_GRADING_REALM`
    (default `lcm`) on the Grading Engine's own base URL, which is where the simulator serves it."""
    base_url = overrides.get("base_url", settings.LCM_GRADING_BASE_URL).rstrip("/")
    realm = getattr(settings, "LCM_GRADING_REALM", "lcm")
    options = {
        "base_url": base_url,
        "client_id": settings.LCM_GRADING_CLIENT_ID,
        "client_secret": settings.LCM_GRADING_CLIENT_SECRET,
        "token_url": getattr(settings, "LCM_GRADING_TOKEN_URL", "")
        or f"{base_url}/realms/{realm}/protocol/openid-connect/token",
        "scope": getattr(settings, "LCM_GRADING_SCOPE", "api"),
        "timeouts": Timeouts(connect=settings.LCM_HTTP_CONNECT_TIMEOUT, read=settings.LCM_HTTP_READ_TIMEOUT),
        "retries": settings.LCM_HTTP_RETRIES,
    } | overrides
    return GradingEngineClient(**options)
