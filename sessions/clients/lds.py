"""Client of the Lab Delivery System, Reservations API v3 (`lds-reservations-v3-subset.openapi.json`,
EXTERNAL-SYSTEMS.md §3).

Authentication is what the spec declares: HTTP Basic on every operation. There is no token to cache, so
"re-authenticating" after a 401 means sending the (possibly rotated) credentials once more: the base client
retries the call once, and a second 401 is `AuthExpired`. Errors are the typed errors of `lcm.http`.

All paths live under `/reservations/v3` (the spec has no `servers` entry; the base URL of a deployment is
configuration). Part numbers are 1-based; the manager always uses one part.
"""

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.conf import settings

from lcm.http import ExternalError, HttpClient, Timeouts

API = "/reservations/v3"

# LDSSession fields a client may write (the rest of the schema is read-only, `user_timeslot_end` and
# `max_length_minutes` are write-only).
WRITABLE_SESSION_FIELDS = (
    "origin",
    "auth_id",
    "auth_id_type",
    "candidate_id",
    "location",
    "timezone_offset",
    "first_name",
    "last_name",
    "rack_group",
    "rack_number",
    "scheduled_date",
    "password",
    "email_address",
)


@dataclass(frozen=True)
class Device:
    """One device the candidate reaches through LDS (LDSSessionPartDev)."""

    label: str
    protocol: str
    host: str
    port: int | None = None
    password: str | None = None

    @classmethod
    def from_value(cls, value: "Device | dict") -> "Device":
        """Accept a Device or the `{label, protocol, host, port}` dicts stored on a UserSession."""
        if isinstance(value, Device):
            return value
        return cls(
            label=value.get("label") or value["device_label"],
            protocol=value["protocol"],
            host=value["host"],
            port=value.get("port"),
            password=value.get("password"),
        )

    def to_lds(self) -> dict:
        return {
            "device_label": self.label,
            "protocol": self.protocol,
            "host": self.host,
            "port": self.port,
            "password": self.password,
        }


@dataclass(frozen=True)
class CreatedSession:
    """What `POST /lab_session` answers: the new session's id and URL."""

    session_id: str
    location: str


class LDSClient(HttpClient):
    """One LDS deployment (region): its base URL, Basic credentials and timeouts."""

    system = "lds"

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        public_base_url: str = "",
        credentials: Callable[[], tuple[str, str]] | None = None,
        **kwargs,
    ):
        """`public_base_url`: the browser-facing base URL that replaces `base_url` at the start of launch URLs.
        `credentials`: called on a 401 to pick up rotated credentials before the one retry."""
        super().__init__(base_url, **kwargs)
        self.username = username
        self.password = password
        self.public_base_url = public_base_url.rstrip("/")
        self.credentials = credentials

    # -- auth hooks ----------------------------------------------------------------------

    def _auth_headers(self) -> dict:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def _reauthenticate(self) -> bool:
        if self.credentials is not None:
            self.username, self.password = self.credentials()
        return True

    # -- content -------------------------------------------------------------------------

    def get_content(self, form_qualified_name: str) -> dict:
        """`GET /lab_folder/minio/{fqn}` (getLabFolderMinIO): the LabFolder LDS holds for this content."""
        return self.json("GET", f"{API}/lab_folder/minio/{form_qualified_name}", operation="getLabFolderMinIO")

    def refresh_content(self, form_qualified_name: str) -> dict:
        """`PUT /lab_folder/minio/{fqn}` (putLabFolderMinIO): re-read the content package; the new LabFolder."""
        return self.json("PUT", f"{API}/lab_folder/minio/{form_qualified_name}", operation="putLabFolderMinIO")

    def validate_content(self, form_qualified_name: str) -> dict:
        """`GET /lab_folder/minio/{fqn}/validate` (getLabFolderMinIOValidate): `{is_valid, message}`."""
        return self.json(
            "GET", f"{API}/lab_folder/minio/{form_qualified_name}/validate", operation="getLabFolderMinIOValidate"
        )

    # -- sessions ------------------------------------------------------------------------

    def create_session(
        self,
        *,
        candidate_id: str,
        form_qualified_name: str,
        first_name: str,
        last_name: str,
        scheduled_date: datetime | None = None,
        origin: str = "lcm",
        auth_id_type: str = "ordered_session",
        location: str = "cloud",
        rack_group: str = "lcm",
        rack_number: str = "1",
        timezone_offset: int = 0,
        email_address: str | None = None,
        max_length_minutes: int | None = None,
        user_timeslot_end: datetime | None = None,
    ) -> CreatedSession:
        """`POST /lab_session` (postLDSSession): a session with one minio part for `form_qualified_name`.

        Not retried on 5xx (a retry could create a second session); the caller's reconciler decides.
        """
        body = {
            "origin": origin,
            "auth_id": candidate_id,
            "auth_id_type": auth_id_type,
            "candidate_id": candidate_id,
            "location": location,
            "timezone_offset": timezone_offset,
            "first_name": first_name,
            "last_name": last_name,
            "rack_group": rack_group,
            "rack_number": str(rack_number),
            "scheduled_date": _iso(scheduled_date or datetime.now(UTC)),
            "session_parts": [{"repository_type": "minio", "form_qualified_name": form_qualified_name}],
        }
        if email_address is not None:
            body["email_address"] = email_address
        if max_length_minutes is not None:
            body["max_length_minutes"] = max_length_minutes
        if user_timeslot_end is not None:
            body["user_timeslot_end"] = _iso(user_timeslot_end)
        answer = self.json("POST", f"{API}/lab_session", operation="postLDSSession", json=body)
        return CreatedSession(session_id=answer["session_id"], location=answer.get("location", ""))

    def get_session(self, session_id: str) -> dict:
        """`GET /lab_session/{id}` (getLDSSession): the LDSSession with `state`, `is_finalized`, parts."""
        return self.json("GET", f"{API}/lab_session/{session_id}", operation="getLDSSession")

    def update_session(self, session_id: str, **changes) -> dict:
        """`PATCH /lab_session/{id}` (patchLDSSession): change writable fields (e.g. `user_timeslot_end`).

        The spec types the PATCH body as the whole LDSSession with its required fields, so the current
        writable fields are read first and sent back with the changes.
        """
        current = self.get_session(session_id)
        body = {name: current[name] for name in WRITABLE_SESSION_FIELDS if name in current}
        for name, value in changes.items():
            body[name] = _iso(value) if isinstance(value, datetime) else value
        return self.json("PATCH", f"{API}/lab_session/{session_id}", operation="patchLDSSession", json=body)

    def latest_session_for_state(self, state: str) -> dict:
        """`GET /lab_session?state=` (getLDSSessionLatestForState): `{latest_session_id, state}`."""
        return self.json("GET", f"{API}/lab_session", operation="getLDSSessionLatestForState", params={"state": state})

    def launch_url(self, session_id: str) -> str:
        """`GET /lab_session/{id}/lablet_launch_url` (getLDSSessionLabletLaunchURL): the candidate's login URL,
        on the browser-facing base URL when one is configured."""
        operation = "getLDSSessionLabletLaunchURL"
        body = self.json("GET", f"{API}/lab_session/{session_id}/lablet_launch_url", operation=operation)
        url = body.get("url") if isinstance(body, dict) else None
        # The candidate's browser opens it: anything but http(s) (`javascript:`, `data:`) is a bad answer.
        if (
            not isinstance(url, str)
            or urlsplit(url).scheme.lower() not in ("http", "https")
            or not urlsplit(url).netloc
        ):
            raise ExternalError(self.system, operation, f"answered with a launch URL that is not http(s): {url!r:.200}")
        if self.public_base_url and url.startswith(self.base_url):
            url = self.public_base_url + url[len(self.base_url) :]
        return url

    def statuses(self, session_id: str) -> dict:
        """`GET /lab_session/{id}/statuses` (getLDSSessionStatuses): session and part status history."""
        return self.json("GET", f"{API}/lab_session/{session_id}/statuses", operation="getLDSSessionStatuses")

    def pause(self, session_id: str) -> None:
        """`PUT /lab_session/{id}/pause` (putLDSSessionPause): 204; the part timer stops."""
        self.request("PUT", f"{API}/lab_session/{session_id}/pause", operation="putLDSSessionPause")

    def resume(self, session_id: str) -> None:
        """`PUT /lab_session/{id}/resume` (putLDSSessionRestart): 204; the part timer runs again."""
        self.request("PUT", f"{API}/lab_session/{session_id}/resume", operation="putLDSSessionRestart")

    def release(self, session_id: str) -> None:
        """`POST /lab_session/{id}/release` (putLDSSessionFinalize): 204, the session is finalized.

        The body is required JSON (`{}`). Releasing twice is harmless, so the call is retried like an
        idempotent one.
        """
        self.request(
            "POST",
            f"{API}/lab_session/{session_id}/release",
            operation="putLDSSessionFinalize",
            json={},
            retry_non_idempotent=True,
        )

    def refresh_status(self, session_id: str) -> str:
        """`PUT /lab_session/{id}/refresh_status` (putLDSSessionRefreshStatus): LDS re-checks the session
        (on the final part it becomes user finished); the result message."""
        return self.json(
            "PUT", f"{API}/lab_session/{session_id}/refresh_status", operation="putLDSSessionRefreshStatus"
        ).get("result", "")

    def force_user_finished(self, session_id: str) -> str:
        """`PUT /lab_session/{id}/force_user_finished` (putLDSSessionForceUserFinished): the session and
        every part become user finished; the result message."""
        return self.json(
            "PUT",
            f"{API}/lab_session/{session_id}/force_user_finished",
            operation="putLDSSessionForceUserFinished",
        ).get("result", "")

    # -- parts ---------------------------------------------------------------------------

    def get_part(self, session_id: str, part_num: int = 1) -> dict:
        """`GET /lab_session/{id}/part/{n}` (getLDSSessionPart): the LDSSessionPart."""
        return self.json("GET", _part(session_id, part_num), operation="getLDSSessionPart")

    def add_part(self, session_id: str, part_num: int, form_qualified_name: str) -> dict:
        """`POST /lab_session/{id}/part/{n}` (postLDSSessionPart): add minio content as part `n`."""
        body = {"repository_type": "minio", "form_qualified_name": form_qualified_name}
        return self.json("POST", _part(session_id, part_num), operation="postLDSSessionPart", json=body)

    def update_part(self, session_id: str, part_num: int, **fields) -> dict:
        """`PUT /lab_session/{id}/part/{n}` (putLDSSessionPart): change the part's writable fields."""
        return self.json("PUT", _part(session_id, part_num), operation="putLDSSessionPart", json=fields)

    def delete_part(self, session_id: str, part_num: int) -> None:
        """`DELETE /lab_session/{id}/part/{n}` (deleteLDSSessionPart): 204."""
        self.request("DELETE", _part(session_id, part_num), operation="deleteLDSSessionPart")

    def set_devices(self, session_id: str, devices: Iterable[Device | dict], part_num: int = 1) -> list[dict]:
        """`PUT /lab_session/{id}/part/{n}/devices` (putLDSSessionPartDevice): replace the part's devices
        (label, protocol, host, port); the resulting list."""
        body = [Device.from_value(device).to_lds() for device in devices]
        return self.json(
            "PUT", f"{_part(session_id, part_num)}/devices", operation="putLDSSessionPartDevice", json=body
        )

    def get_devices(self, session_id: str, part_num: int = 1) -> list[dict]:
        """`GET /lab_session/{id}/part/{n}/devices` (getLDSSessionPartDevice)."""
        return self.json("GET", f"{_part(session_id, part_num)}/devices", operation="getLDSSessionPartDevice")

    def get_variables(self, session_id: str, part_num: int = 1) -> dict:
        """`GET /lab_session/{id}/part/{n}/variables` (getLDSSessionPartVariables): the variables dict."""
        answer = self.json("GET", f"{_part(session_id, part_num)}/variables", operation="getLDSSessionPartVariables")
        return answer.get("variables", {})

    def set_variables(self, session_id: str, variables: dict, part_num: int = 1) -> dict:
        """`PUT /lab_session/{id}/part/{n}/variables` (putLDSSessionPartVariables): add or replace variables;
        the resulting variables dict."""
        answer = self.json(
            "PUT",
            f"{_part(session_id, part_num)}/variables",
            operation="putLDSSessionPartVariables",
            json=variables,
        )
        return answer.get("variables", {})

    def extend_part(self, session_id: str, minutes: int, part_num: int = 1) -> None:
        """`PUT /lab_session/{id}/part/{n}/extend` (putLDSSessionPartExtension): add (or remove) minutes."""
        self.request(
            "PUT",
            f"{_part(session_id, part_num)}/extend",
            operation="putLDSSessionPartExtension",
            json={"time_extension": int(minutes)},
        )

    def adjust_part(self, session_id: str, minutes: int, part_num: int = 1) -> None:
        """`PUT /lab_session/{id}/part/{n}/adjust` (putLDSSessionPartAdjustment): adjust the time allotment."""
        self.request(
            "PUT",
            f"{_part(session_id, part_num)}/adjust",
            operation="putLDSSessionPartAdjustment",
            json={"time_adjustment": int(minutes)},
        )

    def collect_responses(self, session_id: str, part_num: int = 1) -> dict:
        """`GET /lab_session/{id}/part/{n}/collect` (getLDSSessionPartResponses): the candidate's answers."""
        answer = self.json("GET", f"{_part(session_id, part_num)}/collect", operation="getLDSSessionPartResponses")
        return answer.get("sections", {})


def _part(session_id: str, part_num: int) -> str:
    return f"{API}/lab_session/{session_id}/part/{int(part_num)}"


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def lds_client(**overrides) -> LDSClient:
    """The LDS client configured by settings (LCM_LDS_*, LCM_HTTP_*); keyword arguments override them."""
    options = {
        "base_url": settings.LCM_LDS_BASE_URL,
        "username": settings.LCM_LDS_CLIENT_ID,
        "password": settings.LCM_LDS_CLIENT_SECRET,
        "public_base_url": getattr(settings, "LCM_LDS_PUBLIC_BASE_URL", ""),
        "timeouts": Timeouts(connect=settings.LCM_HTTP_CONNECT_TIMEOUT, read=settings.LCM_HTTP_READ_TIMEOUT),
        "retries": settings.LCM_HTTP_RETRIES,
    } | overrides
    return LDSClient(**options)
