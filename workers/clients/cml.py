"""The CML 2.9 REST client for one worker (EXTERNAL-SYSTEMS.md §1; `cml-2.9-openapi.json`).

Nothing else in LCM builds CML URLs. A worker's `cml_base_url` ends before `/api/v0`
(`https://10.0.0.5` on EC2, `http://127.0.0.1:8101/w/<name>` on the simulator); every
path below is relative to `<cml_base_url>/api/v0`.

Authentication: one JWT per (worker, username), cached process-wide and shared by every
client instance; on a 401 the client drops that token, authenticates once and retries the
call once (`HttpClient` drives it through `_auth_headers`/`_reauthenticate`); a second 401
is `AuthExpired`, bad credentials are `Forbidden` (CML answers 403).

Errors are the typed errors of `lcm.http`, never a `requests` exception: `Unavailable`
(`Timeout`) when the worker cannot be reached or answers 5xx after the retries, `NotFound`
for a lab that vanished, `Conflict` when the lab's state refuses the call (CML answers 400
to a wipe or delete of a lab that is not stopped/wiped), `BadRequest` for a refused
import or start.
"""

import logging

import yaml
from django.conf import settings

from lcm.http import BadRequest, Conflict, ExternalError, HttpClient, Timeouts, TokenCache, Unavailable

logger = logging.getLogger("lcm.workers.clients.cml")

# (worker base URL, username) -> JWT; shared by every client in the process.
_tokens = TokenCache()

# Deregistration can take up to a minute on a real controller (EXTERNAL-SYSTEMS.md §1.2).
DEREGISTRATION_READ_TIMEOUT = 90.0


def forget_tokens() -> None:
    """Drop every cached CML token (tests; credentials rotated)."""
    _tokens.clear()


class CMLClient(HttpClient):
    """The CML REST API of one worker, authenticated as one user."""

    system = "cml"

    def __init__(self, base_url: str, username: str, password: str, **kwargs):
        self.cml_base_url = base_url.rstrip("/")
        super().__init__(f"{self.cml_base_url}/api/v0", **kwargs)
        self.username = username
        self.password = password
        self._token_key = (self.cml_base_url, username)

    # -- authentication hooks ------------------------------------------------------------

    def _auth_headers(self) -> dict:
        token = _tokens.get(self._token_key) or self.authenticate()
        return {"Authorization": f"Bearer {_tokens.carried(token)}"}

    def _reauthenticate(self) -> bool:
        _tokens.drop_carried(self._token_key)
        return True

    def authenticate(self) -> str:
        """`POST /authenticate {username, password}` → a JWT (bare JSON string), cached for the worker."""
        token = self.json(
            "POST",
            "/authenticate",
            operation="authenticate",
            json={"username": self.username, "password": self.password},
            authenticated=False,
            retry_non_idempotent=True,  # no side effect but a new token
        )
        if not isinstance(token, str) or not token:
            raise ExternalError(self.system, "authenticate", "answered without a token")
        return _tokens.put(self._token_key, token)

    # -- system ----------------------------------------------------------------------------

    def system_information(self) -> dict:
        """`GET /system_information` (no token) → `{version, ready, allow_ssh_pubkey_auth, oui}`.

        `ready` is true once at least one compute can start nodes: the worker readiness gate.
        """
        return self.json("GET", "/system_information", operation="system_information", authenticated=False)

    def system_health(self) -> dict:
        """`GET /system_health` → `{valid, is_licensed, is_enterprise, computes{…}, controller{…}}`."""
        return self.json("GET", "/system_health", operation="system_health")

    def system_stats(self) -> dict:
        """`GET /system_stats` → per-compute CPU, memory, disk (bytes) and `dominfo` (running nodes), plus `all`."""
        return self.json("GET", "/system_stats", operation="system_stats")

    def telemetry_events(self) -> list[dict]:
        """`GET /telemetry/events` → every `{category, timestamp, data}` the controller recorded (no filter)."""
        return self.json("GET", "/telemetry/events", operation="telemetry_events")

    # -- labs --------------------------------------------------------------------------------

    def labs(self, show_all: bool = False) -> list[str]:
        """`GET /labs?show_all=` → the lab ids (the user's own, or all with `show_all`)."""
        params = {"show_all": "true"} if show_all else None
        return self.json("GET", "/labs", operation="labs", params=params)

    def import_lab(self, topology: str | dict, title: str | None = None) -> str:
        """`POST /import?title=` with the topology → the new lab's id (state DEFINED_ON_CORE).

        The topology (a dict, or YAML or JSON text) is sent as the JSON `Topology` object the
        spec declares. Not retried: a retried import could create the lab twice.
        """
        if isinstance(topology, str):
            try:
                topology = yaml.safe_load(topology)
            except yaml.YAMLError as exc:
                raise BadRequest(self.system, "import_lab", f"the topology is not YAML: {exc}") from None
        if not isinstance(topology, dict):
            raise BadRequest(self.system, "import_lab", "the topology is not a YAML/JSON object")
        params = {"title": title} if title else None
        result = self.json("POST", "/import", operation="import_lab", json=topology, params=params)
        if not isinstance(result, dict) or not result.get("id"):
            raise ExternalError(self.system, "import_lab", "answered without a lab id")
        for warning in result.get("warnings") or []:
            logger.warning("cml import of %r on %s: %s", title, self.cml_base_url, warning)
        return result["id"]

    def get_lab(self, lab_id: str) -> dict:
        """`GET /labs/{lab_id}` → `{id, lab_title, state, node_count, link_count, …}`."""
        return self.json("GET", f"/labs/{lab_id}", operation="get_lab")

    def lab_state(self, lab_id: str) -> str:
        """`GET /labs/{lab_id}/state` → `DEFINED_ON_CORE`, `STOPPED` or `STARTED` (there is no lab-level BOOTED)."""
        return self.json("GET", f"/labs/{lab_id}/state", operation="lab_state")

    def start_lab(self, lab_id: str) -> None:
        """`PUT /labs/{lab_id}/start` → 204 at once; nodes then boot (poll `check_converged`).

        Starting a started lab is a no-op; a refusal (e.g. the licensed node count) is `BadRequest`.
        """
        self.request("PUT", f"/labs/{lab_id}/start", operation="start_lab")

    def stop_lab(self, lab_id: str) -> None:
        """`PUT /labs/{lab_id}/stop` → 204; nodes STOPPED, disks kept."""
        self.request("PUT", f"/labs/{lab_id}/stop", operation="stop_lab")

    def wipe_lab(self, lab_id: str) -> None:
        """`PUT /labs/{lab_id}/wipe` → 204; nodes back to DEFINED_ON_CORE, topology kept.

        The lab must be stopped first: CML's refusal (400) is raised as `Conflict`.
        """
        self._state_refusal_is_conflict("PUT", f"/labs/{lab_id}/wipe", "wipe_lab")

    def delete_lab(self, lab_id: str) -> None:
        """`DELETE /labs/{lab_id}` → 204. Stop and wipe first: a refusal (400) is raised as `Conflict`."""
        self._state_refusal_is_conflict("DELETE", f"/labs/{lab_id}", "delete_lab")

    def check_converged(self, lab_id: str) -> bool:
        """`GET /labs/{lab_id}/check_if_converged` → true when no node is still on its way.

        For a lab that was started that means every node is BOOTED: "ready for the user" is
        `lab_state == "STARTED"` and `check_converged` (EXTERNAL-SYSTEMS.md §1.3).
        """
        return self.json("GET", f"/labs/{lab_id}/check_if_converged", operation="check_converged") is True

    def nodes(self, lab_id: str) -> list[dict]:
        """`GET /labs/{lab_id}/nodes?data=true&exclude_configurations=true` → Node objects
        (`id, label, node_definition, tags, state, boot_progress, …`)."""
        return self.json(
            "GET",
            f"/labs/{lab_id}/nodes",
            operation="nodes",
            params={"data": "true", "exclude_configurations": "true"},
        )

    def extract_node_configuration(self, lab_id: str, node_id: str) -> None:
        """`PUT /labs/{lab_id}/nodes/{node_id}/extract_configuration` → 200: the running node's configuration
        becomes its stored one (then part of `download_lab`). A node that is not running is refused (400,
        `BadRequest`). Repeating it is harmless."""
        self.request(
            "PUT",
            f"/labs/{lab_id}/nodes/{node_id}/extract_configuration",
            operation="extract_node_configuration",
            retry_non_idempotent=True,
        )

    def download_lab(self, lab_id: str) -> str:
        """`GET /labs/{lab_id}/download` → the lab as YAML text (declared as a JSON string), node configurations
        included."""
        text = self.json("GET", f"/labs/{lab_id}/download", operation="download_lab")
        if not isinstance(text, str):
            raise ExternalError(self.system, "download_lab", "answered without the lab's YAML text")
        return text

    def set_node_configuration(self, lab_id: str, node_id: str, configuration) -> None:
        """`PATCH /labs/{lab_id}/nodes/{node_id} {"configuration": ...}` → 200: the node's stored configuration
        (what it boots from after a wipe). Setting the same twice is harmless."""
        self.request(
            "PATCH",
            f"/labs/{lab_id}/nodes/{node_id}",
            operation="patch_node",
            json={"configuration": configuration},
            retry_non_idempotent=True,
        )

    def patch_node_tags(self, lab_id: str, node_id: str, tags: list[str]) -> None:
        """`PATCH /labs/{lab_id}/nodes/{node_id} {"tags": [...]}` → 200; the tags are replaced, not merged."""
        self.request(
            "PATCH",
            f"/labs/{lab_id}/nodes/{node_id}",
            operation="patch_node",
            json={"tags": list(tags)},
            retry_non_idempotent=True,  # setting the same tags twice is harmless
        )

    # -- licensing ---------------------------------------------------------------------------

    def licensing(self) -> dict:
        """`GET /licensing` → `{registration: {status, …}, authorization: {status, …}, features, …}`.

        `registration.status` goes IN_PROGRESS → COMPLETED (or FAILED) after `register_licence`.
        """
        return self.json("GET", "/licensing", operation="licensing")

    def register_licence(self, token: str, reregister: bool = False) -> None:
        """`POST /licensing/registration {token, reregister}` → 204 = accepted; poll `licensing()` for the outcome.

        `Conflict` (409) while another licensing operation runs.
        """
        self.request(
            "POST",
            "/licensing/registration",
            operation="register_licence",
            json={"token": token, "reregister": reregister},
        )

    def deregister_licence(self) -> bool:
        """`DELETE /licensing/deregistration` → True when the licensing server was told (204), False when only
        the worker was deregistered (202). `BadRequest` (400) when it was not registered."""
        timeouts = Timeouts(self.timeouts.connect, max(self.timeouts.read, DEREGISTRATION_READ_TIMEOUT))
        response = self.request("DELETE", "/licensing/deregistration", operation="deregister_licence", timeout=timeouts)
        return response.status_code != 202

    # -- helpers -----------------------------------------------------------------------------

    def _state_refusal_is_conflict(self, method: str, path: str, operation: str) -> None:
        try:
            self.request(method, path, operation=operation)
        except BadRequest as exc:
            raise Conflict(exc.system, exc.operation, exc.detail, exc.status, exc.body) from None


def cml_client_for(worker) -> CMLClient:
    """The client for a `CMLWorker`, with the credentials, timeouts, retries and TLS verification from settings."""
    if not worker.cml_base_url:
        raise Unavailable("cml", "connect", f"worker {worker.name} has no CML address yet")
    return CMLClient(
        worker.cml_base_url,
        settings.LCM_CML_USERNAME,
        settings.LCM_CML_PASSWORD,
        timeouts=Timeouts(settings.LCM_HTTP_CONNECT_TIMEOUT, settings.LCM_HTTP_READ_TIMEOUT),
        retries=settings.LCM_HTTP_RETRIES,
        verify=cml_tls_verify(),
    )


def cml_tls_verify() -> bool | str:
    """What `requests` verifies CML's certificate with: the CA bundle when set, else on/off (on by default)."""
    if settings.LCM_CML_VERIFY_TLS and settings.LCM_CML_CA_BUNDLE:
        return settings.LCM_CML_CA_BUNDLE
    return settings.LCM_CML_VERIFY_TLS
