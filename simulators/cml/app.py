"""A faithful, stateful, fault-injectable CML 2.9 simulator (EXTERNAL-SYSTEMS.md §1).

One server hosts many virtual CML controllers ("workers"), one per EC2 worker LCM manages:
`POST /_sim/workers {"name": "w1"}` creates one and answers its `base_url`
(`<server>/w/w1`); its REST API lives at `<base_url>/api/v0/...` with the shapes of
`cml-2.9-openapi.json`. It mirrors `workers/clients/cml.py` and also serves what Cisco's
`virl2-client` 2.9.1 calls for its lab life cycle.

State per worker: one user, real HS256 JWTs (`iss`, `iat`, `exp`, `sub`), labs with their
nodes, interfaces, links, annotations, lab events and telemetry, and the licence. Time-driven
progress (worker warm-up, node boot, licence registration, token expiry) is computed lazily
from `self.clock`, so `/_sim/clock` moves it without background threads. The §1.3 state
machine: import → DEFINED_ON_CORE; start → nodes QUEUED → STARTED (Booting) → BOOTED, the lab
STARTED (never BOOTED); stop → STOPPED; wipe only when not started (400); strict delete only
when DEFINED_ON_CORE (400), switchable per worker.

Faults (`POST /_sim/faults`) name an operation by its CML operationId or by its short name in
`OPERATIONS` (`"start_lab"`), may be limited to one worker with `"worker": "<name>"`, and may
carry flags instead of a status: `expire_tokens` (authenticate hands out an expired token),
`registration_fails` (this licence registration ends FAILED), `reset` (the connection is
dropped without an answer).

Control API besides the common one (all under `/_sim/`):
- `POST /_sim/workers {"name", "username"?, "password"?, "warmup"?, "timings"?, "licensed"?,
  "strict_delete"?, "node_limit"?, "version"?}` → 201 `{"name", "base_url", "username",
  "password"}` (200 with the same shape when the worker exists); `GET /_sim/workers[/<name>]`.
- `PATCH /_sim/workers/<name>`: `ready` (true/false/null = follow the warm-up), `down`
  (connections dropped), `unreachable_for` (seconds of dropped connections), `timings`,
  `strict_delete`, `node_limit`, `registration_outcome` (COMPLETED/FAILED),
  `deregistration_status` (204/202/400). `DELETE /_sim/workers/<name>` forgets the worker.
- `POST /_sim/workers/<name>/expire_tokens`: every token issued so far answers 401.
- `DELETE /_sim/workers/<name>/labs/<lab_id>`: the lab vanishes behind LCM's back.
- `PATCH /_sim/workers/<name>/labs/<lab_id>[/nodes/<node_id>] {"stuck": "QUEUED"|"STARTED"|
  "DISCONNECTED"|null}`: nodes that never finish booting or fall off their compute.

Timings (seconds; `zero_delay` makes all but `token_lifetime` zero; a worker's own `timings`
always apply): `warmup`, `node_queue`, `node_boot` and `node_boot.<node definition>`,
`licence_registration`, `token_lifetime`, and `latency.<short operation name>` (e.g.
`latency.import_lab`) slept before answering.
"""

import contextlib
import json
import logging
import re
import secrets
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import wraps

import jwt
import yaml
from django.conf import settings
from flask import Flask, Response, has_request_context, request
from werkzeug.exceptions import HTTPException

from simulators.common import Faults, Simulator, error_body, iso

logger = logging.getLogger("lcm.simulators.cml")

CML_VERSION = "2.9.0"
TOKEN_ISSUER = "com.cisco.virl"
SSMS_URL = "https://smartreceiver.cisco.com/licservice/license"

# Short name → operationId in cml-2.9-openapi.json, for every operation the simulator serves.
OPERATIONS = {
    "authenticate": "authenticate_authenticate_post",
    "auth_extended": "authenticate_extended_auth_extended_post",
    "authok": "auth_ok_authok_get",
    "logout": "user_logout_logout_delete",
    "system_information": "system_information_handler_system_information_get",
    "system_health": "system_health_get_system_health_get",
    "system_stats": "system_stats_handler_system_stats_get",
    "compute_hosts": "compute_host_list_system_compute_hosts_get",
    "telemetry_events": "telemetry_events_handler_telemetry_events_get",
    "users": "user_list_users_get",
    "labs": "lab_list_labs_get",
    "import_lab": "import_handler_import_post",
    "get_lab": "get_lab_info_labs__lab_id__get",
    "delete_lab": "lab_remove_labs__lab_id__delete",
    "lab_state": "lab_sim_state_labs__lab_id__state_get",
    "start_lab": "lab_allocate_and_start_labs__lab_id__start_put",
    "stop_lab": "lab_stop_labs__lab_id__stop_put",
    "wipe_lab": "lab_wipe_labs__lab_id__wipe_put",
    "check_converged": "lab_check_converged_labs__lab_id__check_if_converged_get",
    "lab_element_state": "lab_element_state_labs__lab_id__lab_element_state_get",
    "simulation_stats": "lab_simulation_stats_labs__lab_id__simulation_stats_get",
    "download_lab": "lab_download_labs__lab_id__download_get",
    "topology": "lab_topology_labs__lab_id__topology_get",
    "lab_events": "lab_event_labs__lab_id__events_get",
    "layer3_addresses": "get_lab_layer3_addresses_handler_labs__lab_id__layer3_addresses_get",
    "nodes": "get_lab_nodes_handler_labs__lab_id__nodes_get",
    "get_node": "node_view_get_labs__lab_id__nodes__node_id__get",
    "patch_node": "node_view_patch_labs__lab_id__nodes__node_id__patch",
    "node_state": "get_node_state_handler_labs__lab_id__nodes__node_id__state_get",
    "start_node": "start_node_handler_labs__lab_id__nodes__node_id__state_start_put",
    "stop_node": "stop_node_handler_labs__lab_id__nodes__node_id__state_stop_put",
    "wipe_node": "wipe_node_handler_labs__lab_id__nodes__node_id__wipe_disks_put",
    "node_interfaces": "get_node_interfaces_handler_labs__lab_id__nodes__node_id__interfaces_get",
    "console_key": "get_console_key_for_lab_node_labs__lab_id__nodes__node_id__keys_console_get",
    "get_interface": "interface_view_get_labs__lab_id__interfaces__interface_id__get",
    "links": "get_lab_links_handler_labs__lab_id__links_get",
    "get_link": "link_view_get_labs__lab_id__links__link_id__get",
    "licensing": "licensing_status_get_licensing_get",
    "register_licence": "licensing_registration_post_licensing_registration_post",
    "deregister_licence": "licensing_registration_delete_licensing_deregistration_delete",
    "renew_registration": "licensing_registration_put_licensing_registration_renew_put",
    "renew_authorization": "licensing_status_put_licensing_authorization_renew_put",
}
SHORT_NAMES = {operation_id: short for short, operation_id in OPERATIONS.items()}

# The node definitions a simulated worker knows (configurable); includes those of
# sample-cml-lab.yaml and of LCM's demo lab.
DEFAULT_NODE_DEFINITIONS = frozenset(
    {
        "alpine",
        "asav",
        "cat8000v",
        "cat9000v-q200",
        "cat9000v-uadp",
        "csr1000v",
        "desktop",
        "external_connector",
        "iol-xe",
        "ioll2-xe",
        "iosv",
        "iosvl2",
        "iosxrv9000",
        "mock-server",
        "nxosv9000",
        "server",
        "trex",
        "ubuntu",
        "ubuntu-desktop-24-04-v2",
        "unmanaged_switch",
        "wan_emulator",
    }
)

UNSCALED_TIMINGS = {"token_lifetime"}  # a lifetime, not a delay: zero_delay leaves it alone
SCHEMA_VERSIONS = {"0.0.1", "0.0.2", "0.0.3", "0.0.4", "0.0.5", "0.1.0", "0.2.0", "0.2.1", "0.2.2", "0.3.0"}
TOPOLOGY_KEYS = {"nodes", "links", "lab", "annotations", "smart_annotations"}
LAB_KEYS = {"version", "title", "description", "notes"}
NODE_KEYS = {
    "id",
    "label",
    "node_definition",
    "image_definition",
    "x",
    "y",
    "ram",
    "cpus",
    "cpu_limit",
    "data_volume",
    "boot_disk_size",
    "hide_links",
    "tags",
    "parameters",
    "configuration",
    "interfaces",
}
NODE_UPDATE_KEYS = NODE_KEYS - {"id", "node_definition", "interfaces"} | {"pinned_compute_id"}
INTERFACE_KEYS = {"id", "type", "node", "label", "slot", "mac_address"}
LINK_KEYS = {"id", "i1", "i2", "n1", "n2", "label", "conditioning"}
_COMMON_ANNOTATION = {
    "border_color": "#00000000",
    "border_style": "",
    "color": "#808080FF",
    "thickness": 1,
    "x1": 0.0,
    "y1": 0.0,
    "z_index": 0,
}
ANNOTATION_DEFAULTS = {
    "text": _COMMON_ANNOTATION
    | {
        "rotation": 0,
        "text_bold": False,
        "text_content": "",
        "text_font": "monospace",
        "text_italic": False,
        "text_size": 12,
        "text_unit": "pt",
    },
    "rectangle": _COMMON_ANNOTATION | {"rotation": 0, "x2": 100.0, "y2": 100.0, "border_radius": 0},
    "ellipse": _COMMON_ANNOTATION | {"rotation": 0, "x2": 100.0, "y2": 100.0},
    "line": _COMMON_ANNOTATION | {"x2": 100.0, "y2": 100.0, "line_start": None, "line_end": None},
}
SMART_ANNOTATION_KEYS = {
    "is_on",
    "padding",
    "tag",
    "label",
    "tag_offset_x",
    "tag_offset_y",
    "tag_size",
    "group_distance",
    "thickness",
    "border_style",
    "fill_color",
    "border_color",
    "z_index",
}
STUCK_STATES = {"QUEUED", "STARTED", "DISCONNECTED"}
RUNNING_NODE_STATES = {"QUEUED", "STARTED", "BOOTED", "DISCONNECTED"}
_UUID4 = re.compile(r"^[\da-f]{8}-[\da-f]{4}-4[\da-f]{3}-[89ab][\da-f]{3}-[\da-f]{12}$")
_WORKER_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LICENCE_TOKEN = re.compile(r"^[a-zA-Z\d+/%=-]{1,256}$")


class CMLError(Exception):
    """An API error answered as `{"code", "description"}` with that HTTP status."""

    def __init__(self, status: int, description: str):
        super().__init__(description)
        self.status = status
        self.description = description


class DropConnection(Exception):
    """Answer nothing: close the connection (a worker that is down or resets connections)."""


def new_id() -> str:
    return str(uuid.uuid4())


def new_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


@dataclass
class SimInterface:
    id: str
    local_id: str
    node_id: str
    label: str
    type: str = "physical"
    slot: int | None = None
    mac_address: str | None = None


@dataclass
class SimNode:
    """One node; `phase` is what was asked (DEFINED_ON_CORE, STOPPED, RUNNING), its state follows the clock."""

    id: str
    local_id: str
    lab_id: str
    label: str
    node_definition: str
    x: int
    y: int
    data: dict  # the optional topology fields, as imported or patched
    tags: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    phase: str = "DEFINED_ON_CORE"
    started_at: float | None = None
    start_recorded: bool = False
    boot_recorded: bool = False
    stuck: str | None = None
    vnc_key: str = field(default_factory=new_id)
    console_key: str = field(default_factory=new_id)


@dataclass
class SimLink:
    id: str
    local_id: str
    label: str | None
    interface_a: str
    interface_b: str
    node_a: str
    node_b: str
    conditioning: dict = field(default_factory=dict)
    capture_key: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class SimLab:
    id: str
    title: str
    description: str
    notes: str
    version: str
    created: float
    modified: float
    nodes: dict[str, SimNode] = field(default_factory=dict)
    interfaces: dict[str, SimInterface] = field(default_factory=dict)
    links: dict[str, SimLink] = field(default_factory=dict)
    annotations: list[dict] = field(default_factory=list)
    smart_annotations: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    phase: str = "DEFINED_ON_CORE"  # the state of a lab without nodes


@dataclass
class SimLicence:
    status: str = "UNREGISTERED"
    attempted_at: float | None = None
    completes_at: float | None = None
    outcome: str = "COMPLETED"
    succeeded_at: float | None = None
    failure: str | None = None


@dataclass
class SimWorker:
    """One virtual CML controller with a single compute."""

    name: str
    username: str
    password: str
    created_at: float
    warmup: float
    version: str = CML_VERSION
    user_id: str = field(default_factory=new_id)
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    compute_id: str = field(default_factory=new_id)
    product_uuid: str = field(default_factory=new_id)
    ready_override: bool | None = None
    down: bool = False
    unreachable_until: float = 0.0
    timings: dict = field(default_factory=dict)
    strict_delete: bool = True
    node_limit: int | None = None
    registration_outcome: str = "COMPLETED"
    deregistration_status: int = 204
    cpu_count: int = 32
    memory_total: int = 128 * 1024**3
    disk_total: int = 1000 * 1024**3
    tokens: set[str] = field(default_factory=set)
    labs: dict[str, SimLab] = field(default_factory=dict)
    telemetry: list[dict] = field(default_factory=list)
    licence: SimLicence = field(default_factory=SimLicence)

    @property
    def hostname(self) -> str:
        return re.sub(r"[^A-Za-z0-9.-]", "-", f"cml-{self.name}")[:64]


class CMLFaults(Faults):
    """Faults that may name an operation by its short name and be limited to one worker.

    A rule that only carries a flag (no status, no delay) is not a failure: the view that
    honours the flag consumes it with `take_flag`.
    """

    def take(self, operation: str):
        worker = current_worker_name()
        with self._lock:
            for rule in list(self.rules):
                if _is_flag_rule(rule) or not _rule_matches(rule, operation, worker):
                    continue
                if rule.probability < 1 and self._random.random() >= rule.probability:
                    continue
                self._consume(rule)
                return rule
        return None

    def take_flag(self, name: str, operation: str) -> bool:
        """Whether a rule sets flag `name` for this call (consuming one of its `times`)."""
        worker = current_worker_name()
        with self._lock:
            for rule in list(self.rules):
                if not rule.extra.get(name) or not _rule_matches(rule, operation, worker):
                    continue
                if rule.probability < 1 and self._random.random() >= rule.probability:
                    continue
                self._consume(rule)
                return True
        return False

    def _consume(self, rule) -> None:
        if rule.times is not None:
            rule.times -= 1
            if rule.times <= 0:
                self.rules.remove(rule)


def _is_flag_rule(rule) -> bool:
    return (
        bool(rule.extra)
        and rule.status is None
        and not rule.delay
        and any(value is True for key, value in rule.extra.items() if key != "worker")
    )


def _rule_matches(rule, operation: str, worker: str | None) -> bool:
    if rule.operation not in ("*", operation, SHORT_NAMES.get(operation)):
        return False
    scoped = rule.extra.get("worker")
    return not scoped or scoped == worker


def current_worker_name() -> str | None:
    if not has_request_context() or not request.view_args:
        return None
    return request.view_args.get("worker")


def _setting(name: str, default: str) -> str:
    return getattr(settings, name, default) if settings.configured else default


def _json(value, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, mimetype="application/json")


def _no_content(status: int = 204) -> Response:
    return Response(status=status)


def _error(status: int, description: str) -> Response:
    return _json(error_body(status, description), status)


def _body_json():
    return request.get_json(silent=True, force=True)


def _flag(name: str) -> bool | None:
    """A boolean query parameter as FastAPI reads it (None when absent)."""
    value = request.args.get(name)
    if value is None:
        return None
    return value.lower() in ("1", "true", "yes", "on")


def _drop_connection() -> Response:
    """Shut the client's socket so it sees a reset connection; the response is never delivered."""
    sock = request.environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    return _error(502, "connection dropped by the simulator")


class CMLSimulator(Simulator):
    """Many virtual CML 2.9 controllers, each at `/w/<name>/api/v0`; see the module docstring."""

    name = "cml"

    def __init__(
        self,
        *,
        zero_delay: bool = False,
        timings: dict | None = None,
        seed: int | None = None,
        username: str | None = None,
        password: str | None = None,
        node_definitions: set[str] | frozenset[str] | None = None,
        version: str = CML_VERSION,
    ):
        self.workers: dict[str, SimWorker] = {}
        self.username = username or _setting("LCM_CML_USERNAME", "admin")
        self.password = password or _setting("LCM_CML_PASSWORD", "admin")
        self.node_definitions = frozenset(node_definitions or DEFAULT_NODE_DEFINITIONS)
        self.version = version
        super().__init__(zero_delay=zero_delay, timings=timings, seed=seed)
        self.faults = CMLFaults(seed)

    def default_timings(self) -> dict:
        return {
            "warmup": 2.0,
            "node_queue": 0.2,
            "node_boot": 1.0,
            "licence_registration": 0.5,
            "token_lifetime": 86400.0,
        }

    def reset_state(self) -> None:
        self.workers.clear()

    def control_state(self) -> dict:
        return {"workers": {name: self._worker_summary(w) for name, w in self.workers.items()}}

    # -- time ----------------------------------------------------------------------------

    def worker_timing(self, worker: SimWorker, *names: str) -> float:
        """The first of `names` the worker or the simulator sets (the worker's own values always apply)."""
        for name in names:
            if name in worker.timings:
                return float(worker.timings[name])
            if name in self.timings:
                if self.zero_delay and name not in UNSCALED_TIMINGS:
                    return 0.0
                return float(self.timings[name])
        return 0.0

    def is_ready(self, worker: SimWorker) -> bool:
        if worker.ready_override is not None:
            return worker.ready_override
        return self.clock.time() >= worker.created_at + worker.warmup

    def node_state(self, worker: SimWorker, node: SimNode) -> tuple[str, str]:
        """(state, boot_progress) of a node now."""
        if node.phase != "RUNNING":
            return node.phase, "Not running"
        if node.stuck == "DISCONNECTED":
            return "DISCONNECTED", "Not running"
        elapsed = self.clock.time() - (node.started_at or 0.0)
        queue = self.worker_timing(worker, "node_queue")
        if node.stuck == "QUEUED" or elapsed < queue:
            return "QUEUED", "Not running"
        boot = self.worker_timing(worker, f"node_boot.{node.node_definition}", "node_boot")
        if node.stuck == "STARTED" or elapsed < queue + boot:
            return "STARTED", "Booting"
        return "BOOTED", "Booted"

    def lab_state(self, worker: SimWorker, lab: SimLab) -> str:
        """Derived from the nodes (§1.3): STARTED if any runs, DEFINED_ON_CORE if all are, else STOPPED."""
        if not lab.nodes:
            return lab.phase
        phases = {node.phase for node in lab.nodes.values()}
        if "RUNNING" in phases:
            return "STARTED"
        if phases == {"DEFINED_ON_CORE"}:
            return "DEFINED_ON_CORE"
        return "STOPPED"

    def converged(self, worker: SimWorker, lab: SimLab) -> bool:
        """No node is on its way anywhere: a started lab has converged once every node is BOOTED."""
        return all(
            self.node_state(worker, node)[0] in ("BOOTED", "STOPPED", "DEFINED_ON_CORE") for node in lab.nodes.values()
        )

    def _progress(self, worker: SimWorker) -> None:
        """Record what time has done since the last call: node boots and licence outcomes."""
        now = self.clock.time()
        licence = worker.licence
        if licence.status == "IN_PROGRESS" and licence.completes_at is not None and now >= licence.completes_at:
            licence.status = licence.outcome
            if licence.outcome == "COMPLETED":
                licence.succeeded_at = licence.completes_at
                licence.failure = None
            else:
                licence.failure = "Registration failed: the Smart Licensing server rejected the token"
            self._telemetry(worker, "license_info", {"registration_status": licence.status}, at=licence.completes_at)
        queue = self.worker_timing(worker, "node_queue")
        for lab in worker.labs.values():
            for node in lab.nodes.values():
                if node.phase != "RUNNING":
                    continue
                state, _ = self.node_state(worker, node)
                if state in ("STARTED", "BOOTED") and not node.start_recorded:
                    node.start_recorded = True
                    at = (node.started_at or now) + queue
                    self._telemetry(worker, "start_node", {"lab_id": lab.id, "node_id": node.id}, at=at)
                    self._lab_event(
                        lab, "STATE_CHANGED", "NODE", node.id, {"state": "STARTED"}, {"state": "QUEUED"}, at
                    )
                if state == "BOOTED" and not node.boot_recorded:
                    node.boot_recorded = True
                    boot = self.worker_timing(worker, f"node_boot.{node.node_definition}", "node_boot")
                    at = (node.started_at or now) + queue + boot
                    self._telemetry(
                        worker,
                        "boot_node",
                        {"lab_id": lab.id, "node_id": node.id, "node_definition": node.node_definition},
                        at=at,
                    )
                    self._lab_event(
                        lab, "STATE_CHANGED", "NODE", node.id, {"state": "BOOTED"}, {"state": "STARTED"}, at
                    )

    # -- records -------------------------------------------------------------------------

    def _now_iso(self, at: float | None = None) -> str:
        return iso(datetime.fromtimestamp(self.clock.time() if at is None else at, UTC))

    def _telemetry(self, worker: SimWorker, category: str, data: dict, at: float | None = None) -> None:
        worker.telemetry.append({"category": category, "timestamp": self._now_iso(at), "data": data})

    def _lab_event(self, lab, event, element_type, element_id, data, previous=None, at=None) -> None:
        lab.events.append(
            {
                "lab_id": lab.id,
                "event": event,
                "element_type": element_type,
                "element_id": element_id,
                "data": data,
                "previous": previous or {},
                "timestamp": self._now_iso(at),
            }
        )

    # -- auth ----------------------------------------------------------------------------

    def issue_token(self, worker: SimWorker, operation: str) -> str:
        now = int(self.clock.time())
        lifetime = self.worker_timing(worker, "token_lifetime")
        expires = now - 1 if self.faults.take_flag("expire_tokens", operation) else now + int(lifetime)
        claims = {"iss": TOKEN_ISSUER, "iat": now, "exp": expires, "sub": worker.user_id, "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, worker.secret, algorithm="HS256")
        worker.tokens = {t for t in worker.tokens if self._token_expiry(worker, t) > now}
        worker.tokens.add(token)
        return token

    def _token_expiry(self, worker: SimWorker, token: str) -> float:
        try:
            return jwt.decode(
                token, worker.secret, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False}
            )["exp"]
        except jwt.InvalidTokenError:
            return 0.0

    def _check_token(self, worker: SimWorker) -> str:
        """The bearer token of this request, or CMLError 401 (missing, invalid, revoked or expired)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CMLError(401, "No authorization token provided.")
        token = token.strip()
        try:
            claims = jwt.decode(
                token,
                worker.secret,
                algorithms=["HS256"],
                issuer=TOKEN_ISSUER,
                options={"verify_exp": False, "verify_iat": False, "require": ["iss", "iat", "exp", "sub"]},
            )
        except jwt.InvalidTokenError:
            raise CMLError(401, "Invalid token.") from None
        if claims["sub"] != worker.user_id or token not in worker.tokens:
            raise CMLError(401, "Token has been revoked.")
        if claims["exp"] <= self.clock.time():
            raise CMLError(401, "Token has expired.")
        return token

    def _credentials(self, worker: SimWorker) -> None:
        body = _body_json()
        if not isinstance(body, dict) or not isinstance(body.get("username"), str) or "password" not in body:
            raise CMLError(400, "Body must be {username, password}.")
        if not 1 <= len(body["username"]) <= 32:
            raise CMLError(400, "username must be 1 to 32 characters.")
        if body["username"] != worker.username or body["password"] != worker.password:
            raise CMLError(403, "Authentication failed!")

    # -- routing -------------------------------------------------------------------------

    def _api(self, short: str, rule: str, methods: list[str], *, auth: bool = True):
        """Register a real CML view at `/w/<worker>/api/v0<rule>` under its spec operationId."""
        operation_id = OPERATIONS[short]

        def decorate(view):
            def handler(worker: str, **kwargs):
                sim_worker = self.workers.get(worker)
                if sim_worker is None:
                    return _error(404, f"No simulated CML worker named {worker!r}.")
                latency = self.worker_timing(sim_worker, f"latency.{short}")
                if latency:
                    time.sleep(latency)
                try:
                    if self.faults.take_flag("reset", operation_id):
                        raise DropConnection
                    with self.lock:
                        if auth:
                            self._check_token(sim_worker)
                        self._progress(sim_worker)
                        return view(sim_worker, **kwargs)
                except CMLError as exc:
                    return _error(exc.status, exc.description)
                except DropConnection:
                    return _drop_connection()

            recorded = self.operation(operation_id)(handler)

            @wraps(view)
            def endpoint(worker: str, **kwargs):
                sim_worker = self.workers.get(worker)
                if sim_worker is not None and (sim_worker.down or self.clock.time() < sim_worker.unreachable_until):
                    return _drop_connection()
                return recorded(worker=worker, **kwargs)

            self.app.add_url_rule(
                f"/w/<worker>/api/v0{rule}", endpoint=f"cml_{short}", view_func=endpoint, methods=methods
            )
            return view

        return decorate

    def _lab(self, worker: SimWorker, lab_id: str) -> SimLab:
        if not _UUID4.match(lab_id):
            raise CMLError(400, f"Invalid lab id: {lab_id}")
        lab = worker.labs.get(lab_id)
        if lab is None:
            raise CMLError(404, f"Lab not found: {lab_id}")
        return lab

    def _node(self, lab: SimLab, node_id: str) -> SimNode:
        node = lab.nodes.get(node_id)
        if node is None:
            raise CMLError(404, f"Node not found: {node_id}")
        return node

    # -- serialisation -------------------------------------------------------------------

    def _lab_json(self, worker: SimWorker, lab: SimLab) -> dict:
        return {
            "id": lab.id,
            "created": self._now_iso(lab.created),
            "modified": self._now_iso(lab.modified),
            "lab_title": lab.title,
            "lab_description": lab.description,
            "lab_notes": lab.notes,
            "owner": worker.user_id,
            "owner_username": worker.username,
            "owner_fullname": "",
            "state": self.lab_state(worker, lab),
            "node_count": len(lab.nodes),
            "link_count": len(lab.links),
            "groups": [],
            "effective_permissions": ["lab_admin", "lab_edit", "lab_exec", "lab_view"],
        }

    def _node_json(
        self, worker: SimWorker, node: SimNode, *, operational: bool = False, configurations: bool = True
    ) -> dict:
        state, progress = self.node_state(worker, node)
        running = state in RUNNING_NODE_STATES
        data = node.data
        body = {
            "id": node.id,
            "lab_id": node.lab_id,
            "label": node.label,
            "node_definition": node.node_definition,
            "image_definition": data.get("image_definition"),
            "x": node.x,
            "y": node.y,
            "tags": list(node.tags),
            "parameters": data.get("parameters") or {},
            "ram": data.get("ram"),
            "cpus": data.get("cpus"),
            "cpu_limit": data.get("cpu_limit"),
            "data_volume": data.get("data_volume"),
            "boot_disk_size": data.get("boot_disk_size"),
            "hide_links": data.get("hide_links", False),
            "pinned_compute_id": data.get("pinned_compute_id"),
            "resource_pool": None,
            "state": state,
            "boot_progress": progress,
            "compute_id": worker.compute_id if running else None,
            "vnc_key": node.vnc_key if running else None,
            "serial_consoles": (
                [{"console_key": node.console_key, "label": "Console 0", "device_number": 0}] if running else []
            ),
        }
        if configurations:
            body["configuration"] = data.get("configuration")
        if operational:
            body["operational"] = {
                "boot_disk_size": data.get("boot_disk_size"),
                "cpu_limit": data.get("cpu_limit") or 100,
                "cpus": data.get("cpus") or 1,
                "data_volume": data.get("data_volume"),
                "ram": data.get("ram") or 512,
                "compute_id": worker.compute_id if running else None,
                "image_definition": data.get("image_definition"),
                "vnc_key": node.vnc_key if running else None,
                "resource_pool": None,
                "iol_app_id": None,
                "serial_consoles": body["serial_consoles"],
            }
        return body

    def _element_state(self, worker: SimWorker, lab: SimLab) -> str:
        """Links and interfaces follow the lab."""
        return self.lab_state(worker, lab)

    def _interface_json(self, worker: SimWorker, lab: SimLab, iface: SimInterface, *, operational=False) -> dict:
        connected = any(iface.id in (link.interface_a, link.interface_b) for link in lab.links.values())
        body = {
            "id": iface.id,
            "lab_id": lab.id,
            "node": iface.node_id,
            "label": iface.label,
            "type": iface.type,
            "slot": iface.slot,
            "mac_address": iface.mac_address,
            "is_connected": connected,
            "state": self._element_state(worker, lab),
        }
        if operational:
            body["operational"] = {
                "mac_address": iface.mac_address,
                "src_udp_port": None,
                "dst_udp_port": None,
                "device_name": None,
            }
        return body

    def _link_json(self, worker: SimWorker, lab: SimLab, link: SimLink) -> dict:
        body = {
            "id": link.id,
            "lab_id": lab.id,
            "interface_a": link.interface_a,
            "interface_b": link.interface_b,
            "node_a": link.node_a,
            "node_b": link.node_b,
            "state": self._element_state(worker, lab),
            "link_capture_key": link.capture_key,
        }
        if link.label:
            body["label"] = link.label
        return body

    def _topology_json(self, worker: SimWorker, lab: SimLab, *, configurations: bool = True) -> dict:
        nodes = []
        for node in lab.nodes.values():
            item = {
                "id": node.id,
                "label": node.label,
                "node_definition": node.node_definition,
                "x": node.x,
                "y": node.y,
                "tags": list(node.tags),
                "interfaces": [
                    {
                        "id": iface.id,
                        "node": node.id,
                        "label": iface.label,
                        "type": iface.type,
                        "slot": iface.slot,
                        "mac_address": iface.mac_address,
                    }
                    for iface in (lab.interfaces[i] for i in node.interfaces)
                ],
            }
            item |= {k: v for k, v in node.data.items() if k != "pinned_compute_id"}
            if not configurations:
                item.pop("configuration", None)
            nodes.append(item)
        links = [
            self._link_json(worker, lab, link) | {"conditioning": link.conditioning} for link in lab.links.values()
        ]
        return {
            "lab": {
                "version": lab.version,
                "title": lab.title,
                "description": lab.description,
                "notes": lab.notes,
                "owner": worker.user_id,
            },
            "nodes": nodes,
            "links": links,
            "annotations": lab.annotations,
            "smart_annotations": lab.smart_annotations,
        }

    def _download_yaml(self, lab: SimLab) -> str:
        """The lab in the import format, with the file's own ids and the current tags."""
        local_node = {node.id: node.local_id for node in lab.nodes.values()}
        local_iface = {iface.id: iface.local_id for iface in lab.interfaces.values()}
        nodes = []
        for node in lab.nodes.values():
            item = {"id": node.local_id, "label": node.label, "node_definition": node.node_definition}
            item |= {"x": node.x, "y": node.y, "tags": list(node.tags)}
            item |= {k: v for k, v in node.data.items() if k != "pinned_compute_id"}
            item["interfaces"] = [
                {"id": iface.local_id, "label": iface.label, "type": iface.type, "slot": iface.slot}
                | ({"mac_address": iface.mac_address} if iface.mac_address else {})
                for iface in (lab.interfaces[i] for i in node.interfaces)
            ]
            nodes.append(item)
        links = [
            {
                "id": link.local_id,
                "n1": local_node[link.node_a],
                "n2": local_node[link.node_b],
                "i1": local_iface[link.interface_a],
                "i2": local_iface[link.interface_b],
                "conditioning": link.conditioning,
            }
            | ({"label": link.label} if link.label else {})
            for link in lab.links.values()
        ]
        topology = {
            "annotations": [{k: v for k, v in a.items() if k != "id"} for a in lab.annotations],
            "smart_annotations": [{k: v for k, v in a.items() if k != "id"} for a in lab.smart_annotations],
            "nodes": nodes,
            "links": links,
            "lab": {"description": lab.description, "notes": lab.notes, "title": lab.title, "version": lab.version},
        }
        return yaml.safe_dump(topology, sort_keys=False, allow_unicode=True)

    def _system_stats(self, worker: SimWorker) -> dict:
        running = [
            node
            for lab in worker.labs.values()
            for node in lab.nodes.values()
            if self.node_state(worker, node)[0] in RUNNING_NODE_STATES
        ]
        total_nodes = sum(len(lab.nodes) for lab in worker.labs.values())
        allocated_cpus = sum(node.data.get("cpus") or 1 for node in running)
        allocated_memory = sum(node.data.get("ram") or 512 for node in running)  # MiB
        used_memory = min(worker.memory_total, 4 * 1024**3 + allocated_memory * 1024**2)
        used_disk = min(worker.disk_total, 40 * 1024**3 + total_nodes * 2 * 1024**3)
        percent = min(100.0, 2.0 + 6.5 * len(running))
        memory = {"used": used_memory, "free": worker.memory_total - used_memory, "total": worker.memory_total}
        disk = {"used": used_disk, "free": worker.disk_total - used_disk, "total": worker.disk_total}
        load = round(percent * worker.cpu_count / 100, 2)
        return {
            "computes": {
                worker.compute_id: {
                    "hostname": worker.hostname,
                    "is_controller": True,
                    "stats": {
                        "cpu": {
                            "count": worker.cpu_count,
                            "percent": percent,
                            "model": "Simulated x86_64 CPU",
                            "predicted": allocated_cpus,
                            "load": [load, load, load],
                        },
                        "memory": memory,
                        "disk": disk,
                        "dominfo": {
                            "allocated_cpus": allocated_cpus,
                            "allocated_memory": allocated_memory,
                            "total_nodes": total_nodes,
                            "total_orphans": 0,
                            "running_nodes": len(running),
                            "running_orphans": 0,
                        },
                    },
                }
            },
            "all": {"cpu": {"count": worker.cpu_count, "percent": percent}, "memory": memory, "disk": disk},
            "controller": {"disk": disk},
        }

    def _licensing_json(self, worker: SimWorker) -> dict:
        licence = worker.licence
        registered = licence.status == "COMPLETED"

        def at(value):
            return self._now_iso(value) if value is not None else None

        def time_info(succeeded=None, attempted=None, status=None, failure=None):
            return {
                "succeeded": at(succeeded),
                "attempted": at(attempted),
                "scheduled": None,
                "status": status,
                "failure": failure,
                "success": "SUCCEEDED" if succeeded is not None else None,
            }

        expires = at(licence.succeeded_at + 365 * 86400) if registered and licence.succeeded_at else None
        return {
            "udi": {"hostname": worker.hostname, "product_uuid": worker.product_uuid},
            "registration": {
                "status": licence.status,
                "smart_account": "LCM Simulated Account" if registered else None,
                "virtual_account": "Default" if registered else None,
                "register_time": time_info(
                    licence.succeeded_at,
                    licence.attempted_at,
                    licence.status if licence.attempted_at else None,
                    licence.failure,
                ),
                "renew_time": time_info(),
                "expires": expires,
            },
            "authorization": {
                "status": "IN_COMPLIANCE" if registered else "EVAL",
                "renew_time": time_info(),
                "expires": expires,
            },
            "reservation_mode": False,
            "features": [
                {
                    "id": "regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_2607650b-6ca8-46d5-81e5-e6688b7383c4",
                    "name": "CML - Expansion Nodes",
                    "description": "Cisco Modeling Labs - Expansion Nodes",
                    "version": "1.0",
                    "in_use": sum(
                        1
                        for lab in worker.labs.values()
                        for node in lab.nodes.values()
                        if self.node_state(worker, node)[0] in RUNNING_NODE_STATES
                    ),
                    "status": "IN_COMPLIANCE" if registered else "INIT",
                    "min": 0,
                    "max": worker.node_limit if worker.node_limit is not None else 300,
                    "minEndDate": None,
                    "maxEndDate": None,
                }
            ],
            "product_license": {"active": "CML_Enterprise", "is_enterprise": True},
            "transport": {
                "proxy": {"server": None, "port": None},
                "ssms": SSMS_URL,
                "default_ssms": SSMS_URL,
            },
        }

    def _compute_health(self, worker: SimWorker) -> dict:
        ready = self.is_ready(worker)
        return {
            "kvm_vmx_enabled": True,
            "enough_cpus": True,
            "lld_connected": ready,
            "lld_synced": ready,
            "libvirt": True,
            "fabric": ready,
            "device_mux": ready,
            "refplat_images_available": True,
            "docker_shim": True,
            "valid": ready,
            "admission_state": "READY" if ready else "REGISTERED",
            "is_controller": True,
            "hostname": worker.hostname,
        }

    def _worker_summary(self, worker: SimWorker) -> dict:
        return {
            "name": worker.name,
            "ready": self.is_ready(worker),
            "down": worker.down,
            "licence": worker.licence.status,
            "timings": worker.timings,
            "strict_delete": worker.strict_delete,
            "node_limit": worker.node_limit,
            "labs": {
                lab.id: {
                    "title": lab.title,
                    "state": self.lab_state(worker, lab),
                    "nodes": {node.id: self.node_state(worker, node)[0] for node in lab.nodes.values()},
                }
                for lab in worker.labs.values()
            },
        }

    # -- import --------------------------------------------------------------------------

    def _parse_topology(self) -> dict:
        try:
            text = request.get_data().decode("utf-8")
            try:
                topology = json.loads(text)  # what clients send (the spec's JSON Topology); YAML otherwise
            except ValueError:
                topology = yaml.safe_load(text)
        except (UnicodeDecodeError, RecursionError, yaml.YAMLError) as exc:
            raise CMLError(
                400, f"Import failed: the body is neither YAML nor JSON ({exc.__class__.__name__})."
            ) from None
        if not isinstance(topology, dict):
            raise CMLError(400, "Import failed: the topology must be an object.")
        self._validate_topology(topology)
        return topology

    def _validate_topology(self, topology: dict) -> None:
        def fail(path: str, message: str):
            raise CMLError(400, f"Import failed: {path}: {message}")

        def check_keys(obj, allowed: set, required: set, path: str):
            if not isinstance(obj, dict):
                fail(path, "must be an object")
            extra = sorted(set(obj) - allowed)
            if extra:
                fail(path, f"unexpected field(s) {', '.join(map(str, extra))}")
            missing = sorted(required - set(obj))
            if missing:
                fail(path, f"missing field(s) {', '.join(missing)}")

        check_keys(topology, TOPOLOGY_KEYS, {"nodes", "links", "lab"}, "topology")
        lab = topology["lab"]
        check_keys(lab, LAB_KEYS, {"version"}, "lab")
        if str(lab["version"]) not in SCHEMA_VERSIONS:
            fail("lab.version", f"unsupported schema version {lab['version']!r}")
        title = lab.get("title")
        if title is not None and (not isinstance(title, str) or not 1 <= len(title) <= 64):
            fail("lab.title", "must be 1 to 64 characters")
        if not isinstance(topology["nodes"], list):
            fail("nodes", "must be a list")
        if not isinstance(topology["links"], list):
            fail("links", "must be a list")
        node_ifaces: dict[str, set] = {}
        for index, node in enumerate(topology["nodes"]):
            path = f"nodes[{index}]"
            check_keys(node, NODE_KEYS, {"id", "label", "node_definition", "x", "y"}, path)
            if str(node["id"]) in node_ifaces:
                fail(f"{path}.id", f"duplicate node id {node['id']!r}")
            if node["node_definition"] not in self.node_definitions:
                fail(f"{path}.node_definition", f"unknown node definition {node['node_definition']!r}")
            for axis in ("x", "y"):
                value = node[axis]
                if isinstance(value, bool) or not isinstance(value, int | float) or not -15000 <= value <= 15000:
                    fail(f"{path}.{axis}", "must be a number within -15000..15000")
            if not isinstance(node["label"], str) or not 1 <= len(node["label"]) <= 128:
                fail(f"{path}.label", "must be 1 to 128 characters")
            tags = node.get("tags") or []
            if not isinstance(tags, list) or any(not isinstance(t, str) or len(t) > 64 for t in tags):
                fail(f"{path}.tags", "must be a list of strings of at most 64 characters")
            ifaces = set()
            for i_index, iface in enumerate(node.get("interfaces") or []):
                i_path = f"{path}.interfaces[{i_index}]"
                check_keys(iface, INTERFACE_KEYS, {"id", "type"}, i_path)
                if iface["type"] not in ("physical", "loopback"):
                    fail(f"{i_path}.type", "must be physical or loopback")
                if str(iface["id"]) in ifaces:
                    fail(f"{i_path}.id", f"duplicate interface id {iface['id']!r}")
                ifaces.add(str(iface["id"]))
            node_ifaces[str(node["id"])] = ifaces
        link_ids = set()
        for index, link in enumerate(topology["links"]):
            path = f"links[{index}]"
            check_keys(link, LINK_KEYS, {"id", "i1", "i2", "n1", "n2"}, path)
            if str(link["id"]) in link_ids:
                fail(f"{path}.id", f"duplicate link id {link['id']!r}")
            link_ids.add(str(link["id"]))
            for n_key, i_key in (("n1", "i1"), ("n2", "i2")):
                node_id, iface_id = str(link[n_key]), str(link[i_key])
                if node_id not in node_ifaces:
                    fail(f"{path}.{n_key}", f"unknown node {node_id!r}")
                if iface_id not in node_ifaces[node_id]:
                    fail(f"{path}.{i_key}", f"node {node_id!r} has no interface {iface_id!r}")
        for index, annotation in enumerate(topology.get("annotations") or []):
            if not isinstance(annotation, dict) or annotation.get("type") not in ANNOTATION_DEFAULTS:
                fail(f"annotations[{index}].type", "must be text, rectangle, ellipse or line")
        for index, annotation in enumerate(topology.get("smart_annotations") or []):
            if not isinstance(annotation, dict):
                fail(f"smart_annotations[{index}]", "must be an object")

    def _create_lab(self, worker: SimWorker, topology: dict, title: str | None) -> SimLab:
        now = self.clock.time()
        meta = topology["lab"]
        lab = SimLab(
            id=new_id(),
            title=title or meta.get("title") or f"Lab at {self.clock.now():%a %H:%M %p}",
            description=meta.get("description") or "",
            notes=meta.get("notes") or "",
            version=str(meta["version"]),
            created=now,
            modified=now,
        )
        by_local: dict[tuple[str, str], str] = {}
        node_by_local: dict[str, str] = {}
        for raw in topology["nodes"]:
            data = {k: v for k, v in raw.items() if k not in ("id", "label", "node_definition", "x", "y", "tags")}
            data.pop("interfaces", None)
            node = SimNode(
                id=new_id(),
                local_id=str(raw["id"]),
                lab_id=lab.id,
                label=raw["label"],
                node_definition=raw["node_definition"],
                x=int(raw["x"]),
                y=int(raw["y"]),
                data=data,
                tags=list(raw.get("tags") or []),
            )
            for slot, raw_iface in enumerate(raw.get("interfaces") or []):
                iface = SimInterface(
                    id=new_id(),
                    local_id=str(raw_iface["id"]),
                    node_id=node.id,
                    label=raw_iface.get("label") or f"eth{slot}",
                    type=raw_iface["type"],
                    slot=raw_iface.get("slot", slot),
                    mac_address=raw_iface.get("mac_address"),
                )
                lab.interfaces[iface.id] = iface
                node.interfaces.append(iface.id)
                by_local[(node.local_id, iface.local_id)] = iface.id
            lab.nodes[node.id] = node
            node_by_local[node.local_id] = node.id
        for raw in topology["links"]:
            link = SimLink(
                id=new_id(),
                local_id=str(raw["id"]),
                label=raw.get("label"),
                interface_a=by_local[(str(raw["n1"]), str(raw["i1"]))],
                interface_b=by_local[(str(raw["n2"]), str(raw["i2"]))],
                node_a=node_by_local[str(raw["n1"])],
                node_b=node_by_local[str(raw["n2"])],
                conditioning=raw.get("conditioning") or {},
            )
            lab.links[link.id] = link
        for raw in topology.get("annotations") or []:
            defaults = ANNOTATION_DEFAULTS[raw["type"]]
            lab.annotations.append(
                {"id": new_id(), "type": raw["type"]} | {k: raw.get(k, default) for k, default in defaults.items()}
            )
        for raw in topology.get("smart_annotations") or []:
            lab.smart_annotations.append(
                {"id": new_id()} | {k: v for k, v in raw.items() if k in SMART_ANNOTATION_KEYS}
            )
        return lab

    # -- lab actions ---------------------------------------------------------------------

    def _start_nodes(self, worker: SimWorker, lab: SimLab, nodes) -> None:
        now = self.clock.time()
        for node in nodes:
            if node.phase == "RUNNING":
                continue
            previous = node.phase
            node.phase = "RUNNING"
            node.started_at = now
            node.start_recorded = node.boot_recorded = False
            for iface_id in node.interfaces:
                iface = lab.interfaces[iface_id]
                iface.mac_address = iface.mac_address or new_mac()
            self._telemetry(worker, "queue_node", {"lab_id": lab.id, "node_id": node.id})
            self._lab_event(lab, "STATE_CHANGED", "NODE", node.id, {"state": "QUEUED"}, {"state": previous})

    def _stop_nodes(self, worker: SimWorker, lab: SimLab, nodes) -> None:
        for node in nodes:
            if node.phase != "RUNNING":
                continue
            previous = self.node_state(worker, node)[0]
            node.phase = "STOPPED"
            node.started_at = None
            self._telemetry(worker, "stop_node", {"lab_id": lab.id, "node_id": node.id})
            self._lab_event(lab, "STATE_CHANGED", "NODE", node.id, {"state": "STOPPED"}, {"state": previous})

    def _wipe_nodes(self, worker: SimWorker, lab: SimLab, nodes) -> None:
        for node in nodes:
            if node.phase == "DEFINED_ON_CORE":
                continue
            node.phase = "DEFINED_ON_CORE"
            node.stuck = None
            self._telemetry(worker, "wipe_node", {"lab_id": lab.id, "node_id": node.id})
            self._lab_event(lab, "STATE_CHANGED", "NODE", node.id, {"state": "DEFINED_ON_CORE"}, {"state": "STOPPED"})

    def _check_can_start(self, worker: SimWorker, lab: SimLab, starting: int) -> None:
        if not self.is_ready(worker):
            raise CMLError(400, "Cannot start lab: no compute host is ready to run nodes.")
        if worker.node_limit is not None:
            running = sum(
                1
                for other in worker.labs.values()
                for node in other.nodes.values()
                if node.phase == "RUNNING" and other is not lab
            )
            running += sum(1 for node in lab.nodes.values() if node.phase == "RUNNING")
            if running + starting > worker.node_limit:
                raise CMLError(
                    400, f"Cannot start lab: the licence allows {worker.node_limit} running nodes ({running} running)."
                )

    # -- routes --------------------------------------------------------------------------

    def register_routes(self, app: Flask) -> None:
        api = self._api
        self._register_control_routes(app)

        @app.errorhandler(HTTPException)
        def http_error(exc: HTTPException):
            return _error(exc.code or 500, exc.description or exc.name)

        # -- authentication and system ---------------------------------------------------

        @api("authenticate", "/authenticate", ["POST"], auth=False)
        def authenticate(worker):
            self._credentials(worker)
            return _json(self.issue_token(worker, OPERATIONS["authenticate"]))

        @api("auth_extended", "/auth_extended", ["POST"], auth=False)
        def auth_extended(worker):
            self._credentials(worker)
            token = self.issue_token(worker, OPERATIONS["auth_extended"])
            return _json(
                {"username": worker.username, "id": worker.user_id, "token": token, "admin": True, "error": None}
            )

        @api("authok", "/authok", ["GET"])
        def authok(worker):
            return _json("OK")

        @api("logout", "/logout", ["DELETE"])
        def logout(worker):
            token = self._check_token(worker)
            if _flag("clear_all_sessions"):
                worker.tokens.clear()
            else:
                worker.tokens.discard(token)
            return _json(True)

        @api("system_information", "/system_information", ["GET"], auth=False)
        def system_information(worker):
            return _json(
                {
                    "version": worker.version,
                    "ready": self.is_ready(worker),
                    "allow_ssh_pubkey_auth": False,
                    "oui": "52:54:00:00:00:00",
                }
            )

        @api("system_health", "/system_health", ["GET"])
        def system_health(worker):
            compute = self._compute_health(worker)
            return _json(
                {
                    "valid": compute["valid"],
                    "is_licensed": worker.licence.status == "COMPLETED",
                    "is_enterprise": True,
                    "computes": {worker.compute_id: compute},
                    "controller": {"core_connected": True, "nodes_loaded": True, "images_loaded": True, "valid": True},
                }
            )

        @api("system_stats", "/system_stats", ["GET"])
        def system_stats(worker):
            return _json(self._system_stats(worker))

        @api("compute_hosts", "/system/compute_hosts", ["GET"])
        def compute_hosts(worker):
            ready = self.is_ready(worker)
            nodes = [
                node
                for lab in worker.labs.values()
                for node in lab.nodes.values()
                if self.node_state(worker, node)[0] in RUNNING_NODE_STATES
            ]
            total = sum(len(lab.nodes) for lab in worker.labs.values())
            return _json(
                [
                    {
                        "id": worker.compute_id,
                        "server_address": "127.0.0.1",
                        "hostname": worker.hostname,
                        "is_simulator": False,
                        "is_connector": False,
                        "admission_state": "READY" if ready else "REGISTERED",
                        "nodes": [node.id for node in nodes],
                        "node_counts": {
                            "total_nodes": total,
                            "total_orphans": 0,
                            "running_nodes": len(nodes),
                            "running_orphans": 0,
                        },
                        "is_connected": ready,
                        "is_synced": ready,
                    }
                ]
            )

        @api("telemetry_events", "/telemetry/events", ["GET"])
        def telemetry_events(worker):
            return _json(worker.telemetry)

        @api("users", "/users", ["GET"])
        def users(worker):
            # virl2-client reads it to name a lab's owner.
            return _json(
                [
                    {
                        "id": worker.user_id,
                        "username": worker.username,
                        "fullname": "",
                        "description": "",
                        "email": "",
                        "admin": True,
                        "groups": [],
                        "associations": [],
                        "resource_pool": None,
                        "opt_in": False,
                        "tour_version": "",
                        "created": self._now_iso(worker.created_at),
                        "modified": self._now_iso(worker.created_at),
                        "directory_dn": "",
                        "labs": list(worker.labs),
                        "pubkey_info": None,
                    }
                ]
            )

        # -- labs ------------------------------------------------------------------------

        @api("labs", "/labs", ["GET"])
        def labs(worker):
            return _json(list(worker.labs))

        @api("import_lab", "/import", ["POST"])
        def import_lab(worker):
            title = request.args.get("title")
            if title is not None and not 1 <= len(title) <= 64:
                raise CMLError(400, "Import failed: title must be 1 to 64 characters.")
            lab = self._create_lab(worker, self._parse_topology(), title)
            worker.labs[lab.id] = lab
            self._telemetry(worker, "import_lab", {"lab_id": lab.id, "nodes": len(lab.nodes), "links": len(lab.links)})
            self._lab_event(lab, "ADD", "LAB", lab.id, {"title": lab.title})
            return _json({"id": lab.id, "warnings": []})

        @api("get_lab", "/labs/<lab_id>", ["GET"])
        def get_lab(worker, lab_id):
            return _json(self._lab_json(worker, self._lab(worker, lab_id)))

        @api("delete_lab", "/labs/<lab_id>", ["DELETE"])
        def delete_lab(worker, lab_id):
            lab = self._lab(worker, lab_id)
            state = self.lab_state(worker, lab)
            if worker.strict_delete and state != "DEFINED_ON_CORE":
                raise CMLError(400, f"Lab {lab_id} is {state}: stop and wipe it before deleting it.")
            del worker.labs[lab_id]
            return _no_content()

        @api("lab_state", "/labs/<lab_id>/state", ["GET"])
        def lab_state(worker, lab_id):
            return _json(self.lab_state(worker, self._lab(worker, lab_id)))

        @api("start_lab", "/labs/<lab_id>/start", ["PUT"])
        def start_lab(worker, lab_id):
            lab = self._lab(worker, lab_id)
            starting = [node for node in lab.nodes.values() if node.phase != "RUNNING"]
            if starting:
                self._check_can_start(worker, lab, len(starting))
                self._telemetry(worker, "start_lab", {"lab_id": lab.id, "nodes": len(starting)})
                self._start_nodes(worker, lab, starting)
                lab.modified = self.clock.time()
            lab.phase = "STARTED"
            return _no_content()

        @api("stop_lab", "/labs/<lab_id>/stop", ["PUT"])
        def stop_lab(worker, lab_id):
            lab = self._lab(worker, lab_id)
            if self.lab_state(worker, lab) == "STARTED":
                self._telemetry(worker, "stop_lab", {"lab_id": lab.id})
                self._stop_nodes(worker, lab, lab.nodes.values())
                lab.modified = self.clock.time()
            lab.phase = "STOPPED" if lab.phase == "STARTED" else lab.phase
            return _no_content()

        @api("wipe_lab", "/labs/<lab_id>/wipe", ["PUT"])
        def wipe_lab(worker, lab_id):
            lab = self._lab(worker, lab_id)
            if self.lab_state(worker, lab) == "STARTED":
                raise CMLError(400, "The lab must be stopped before it can be wiped.")
            self._wipe_nodes(worker, lab, lab.nodes.values())
            lab.phase = "DEFINED_ON_CORE"
            lab.modified = self.clock.time()
            return _no_content()

        @api("check_converged", "/labs/<lab_id>/check_if_converged", ["GET"])
        def check_converged(worker, lab_id):
            return _json(self.converged(worker, self._lab(worker, lab_id)))

        @api("lab_element_state", "/labs/<lab_id>/lab_element_state", ["GET"])
        def lab_element_state(worker, lab_id):
            lab = self._lab(worker, lab_id)
            element = self._element_state(worker, lab)
            return _json(
                {
                    "nodes": {node.id: self.node_state(worker, node)[0] for node in lab.nodes.values()},
                    "links": {link_id: element for link_id in lab.links},
                    "interfaces": {iface_id: element for iface_id in lab.interfaces},
                }
            )

        @api("simulation_stats", "/labs/<lab_id>/simulation_stats", ["GET"])
        def simulation_stats(worker, lab_id):
            # The spec declares arrays of Node and Link objects (not per-id statistics).
            lab = self._lab(worker, lab_id)
            return _json(
                {
                    "nodes": [self._node_json(worker, node, configurations=False) for node in lab.nodes.values()],
                    "links": [self._link_json(worker, lab, link) for link in lab.links.values()],
                }
            )

        @api("download_lab", "/labs/<lab_id>/download", ["GET"])
        def download_lab(worker, lab_id):
            # Declared as a JSON string holding the YAML text.
            return _json(self._download_yaml(self._lab(worker, lab_id)))

        @api("topology", "/labs/<lab_id>/topology", ["GET"])
        def topology(worker, lab_id):
            lab = self._lab(worker, lab_id)
            return _json(self._topology_json(worker, lab, configurations=not _flag("exclude_configurations")))

        @api("lab_events", "/labs/<lab_id>/events", ["GET"])
        def lab_events(worker, lab_id):
            return _json(self._lab(worker, lab_id).events)

        @api("layer3_addresses", "/labs/<lab_id>/layer3_addresses", ["GET"])
        def layer3_addresses(worker, lab_id):
            self._lab(worker, lab_id)
            return _json({})  # no external connectors, so nothing learned by DHCP

        # -- nodes, interfaces, links ----------------------------------------------------

        @api("nodes", "/labs/<lab_id>/nodes", ["GET"])
        def nodes(worker, lab_id):
            lab = self._lab(worker, lab_id)
            if not _flag("data"):
                return _json(list(lab.nodes))
            operational = bool(_flag("operational"))
            configurations = not _flag("exclude_configurations")
            return _json(
                [
                    self._node_json(worker, node, operational=operational, configurations=configurations)
                    for node in lab.nodes.values()
                ]
            )

        @api("get_node", "/labs/<lab_id>/nodes/<node_id>", ["GET"])
        def get_node(worker, lab_id, node_id):
            node = self._node(self._lab(worker, lab_id), node_id)
            return _json(
                self._node_json(
                    worker,
                    node,
                    operational=bool(_flag("operational")),
                    configurations=not _flag("exclude_configurations"),
                )
            )

        @api("patch_node", "/labs/<lab_id>/nodes/<node_id>", ["PATCH"])
        def patch_node(worker, lab_id, node_id):
            lab = self._lab(worker, lab_id)
            node = self._node(lab, node_id)
            update = _body_json()
            if not isinstance(update, dict):
                raise CMLError(400, "Body must be a NodeUpdate object.")
            unknown = sorted(set(update) - NODE_UPDATE_KEYS)
            if unknown:
                raise CMLError(400, f"Unexpected field(s) {', '.join(unknown)}.")
            if "tags" in update:
                tags = update["tags"]
                if not isinstance(tags, list) or any(not isinstance(t, str) or len(t) > 64 for t in tags):
                    raise CMLError(400, "tags must be a list of strings of at most 64 characters.")
                node.tags = list(tags)  # replaced, not merged
            if "label" in update:
                if not isinstance(update["label"], str) or not 1 <= len(update["label"]) <= 128:
                    raise CMLError(400, "label must be 1 to 128 characters.")
                node.label = update["label"]
            for axis in ("x", "y"):
                if axis in update:
                    setattr(node, axis, int(update[axis]))
            for key in set(update) - {"tags", "label", "x", "y"}:
                node.data[key] = update[key]
            lab.modified = self.clock.time()
            self._lab_event(lab, "CHANGE", "NODE", node.id, update)
            return _json(node.id)

        @api("node_state", "/labs/<lab_id>/nodes/<node_id>/state", ["GET"])
        def node_state(worker, lab_id, node_id):
            state, progress = self.node_state(worker, self._node(self._lab(worker, lab_id), node_id))
            return _json({"state": state, "progress": progress})

        @api("start_node", "/labs/<lab_id>/nodes/<node_id>/state/start", ["PUT"])
        def start_node(worker, lab_id, node_id):
            lab = self._lab(worker, lab_id)
            node = self._node(lab, node_id)
            if node.phase != "RUNNING":
                self._check_can_start(worker, lab, 1)
                self._start_nodes(worker, lab, [node])
            return _no_content()

        @api("stop_node", "/labs/<lab_id>/nodes/<node_id>/state/stop", ["PUT"])
        def stop_node(worker, lab_id, node_id):
            lab = self._lab(worker, lab_id)
            self._stop_nodes(worker, lab, [self._node(lab, node_id)])
            return _no_content()

        @api("wipe_node", "/labs/<lab_id>/nodes/<node_id>/wipe_disks", ["PUT"])
        def wipe_node(worker, lab_id, node_id):
            lab = self._lab(worker, lab_id)
            node = self._node(lab, node_id)
            if node.phase == "RUNNING":
                raise CMLError(400, "The node must be stopped before its disks can be wiped.")
            self._wipe_nodes(worker, lab, [node])
            return _no_content()

        @api("node_interfaces", "/labs/<lab_id>/nodes/<node_id>/interfaces", ["GET"])
        def node_interfaces(worker, lab_id, node_id):
            lab = self._lab(worker, lab_id)
            node = self._node(lab, node_id)
            if not _flag("data"):
                return _json(list(node.interfaces))
            operational = bool(_flag("operational"))
            return _json(
                [self._interface_json(worker, lab, lab.interfaces[i], operational=operational) for i in node.interfaces]
            )

        @api("console_key", "/labs/<lab_id>/nodes/<node_id>/keys/console", ["GET"])
        def console_key(worker, lab_id, node_id):
            node = self._node(self._lab(worker, lab_id), node_id)
            if self.node_state(worker, node)[0] not in RUNNING_NODE_STATES or request.args.get("line", "0") != "0":
                raise CMLError(404, f"No console key for node {node_id}.")
            return _json(node.console_key)

        @api("get_interface", "/labs/<lab_id>/interfaces/<interface_id>", ["GET"])
        def get_interface(worker, lab_id, interface_id):
            lab = self._lab(worker, lab_id)
            iface = lab.interfaces.get(interface_id)
            if iface is None:
                raise CMLError(404, f"Interface not found: {interface_id}")
            return _json(self._interface_json(worker, lab, iface, operational=bool(_flag("operational"))))

        @api("links", "/labs/<lab_id>/links", ["GET"])
        def links(worker, lab_id):
            lab = self._lab(worker, lab_id)
            if not _flag("data"):
                return _json(list(lab.links))
            return _json([self._link_json(worker, lab, link) for link in lab.links.values()])

        @api("get_link", "/labs/<lab_id>/links/<link_id>", ["GET"])
        def get_link(worker, lab_id, link_id):
            lab = self._lab(worker, lab_id)
            link = lab.links.get(link_id)
            if link is None:
                raise CMLError(404, f"Link not found: {link_id}")
            return _json(self._link_json(worker, lab, link))

        # -- licensing -------------------------------------------------------------------

        @api("licensing", "/licensing", ["GET"])
        def licensing(worker):
            return _json(self._licensing_json(worker))

        @api("register_licence", "/licensing/registration", ["POST"])
        def register_licence(worker):
            body = _body_json()
            if not isinstance(body, dict) or set(body) - {"token", "reregister"}:
                raise CMLError(400, "Body must be {token, reregister?}.")
            token = body.get("token")
            if not isinstance(token, str) or not _LICENCE_TOKEN.match(token):
                raise CMLError(400, "Invalid registration token.")
            licence = worker.licence
            if licence.status == "IN_PROGRESS":
                raise CMLError(409, "A registration is already in progress.")
            if licence.status == "COMPLETED" and not body.get("reregister"):
                raise CMLError(400, "The product is already registered; set reregister to register again.")
            fails = self.faults.take_flag("registration_fails", OPERATIONS["register_licence"])
            now = self.clock.time()
            worker.licence = SimLicence(
                status="IN_PROGRESS",
                attempted_at=now,
                completes_at=now + self.worker_timing(worker, "licence_registration"),
                outcome="FAILED" if fails or worker.registration_outcome == "FAILED" else "COMPLETED",
            )
            self._progress(worker)
            return _no_content()

        @api("deregister_licence", "/licensing/deregistration", ["DELETE"])
        def deregister_licence(worker):
            licence = worker.licence
            if licence.status == "IN_PROGRESS":
                raise CMLError(409, "Deregistration cannot be requested while a registration is in progress.")
            if licence.status != "COMPLETED" or worker.deregistration_status == 400:
                return _no_content(400)  # the spec declares no body for "already deregistered"
            worker.licence = SimLicence()
            self._telemetry(worker, "license_info", {"registration_status": "UNREGISTERED"})
            return _no_content(202 if worker.deregistration_status == 202 else 204)

        @api("renew_registration", "/licensing/registration/renew", ["PUT"])
        def renew_registration(worker):
            if worker.licence.status != "COMPLETED":
                raise CMLError(400, "The product is not registered.")
            return _no_content()

        @api("renew_authorization", "/licensing/authorization/renew", ["PUT"])
        def renew_authorization(worker):
            if worker.licence.status != "COMPLETED":
                raise CMLError(400, "The product is not registered.")
            return _no_content()

    # -- control API ---------------------------------------------------------------------

    def _register_control_routes(self, app: Flask) -> None:
        @app.post("/_sim/workers")
        def sim_worker_create():
            payload = _body_json() or {}
            name = payload.get("name") if isinstance(payload, dict) else None
            if not isinstance(name, str) or not _WORKER_NAME.match(name):
                return _error(400, "name is required: 1-64 letters, digits, '.', '_' or '-'")
            base_url = f"{request.host_url.rstrip('/')}/w/{name}"
            with self.lock:
                worker = self.workers.get(name)
                status = 200
                if worker is None:
                    try:
                        worker = self._new_worker(name, payload)
                    except (TypeError, ValueError) as exc:
                        return _error(400, f"bad worker options: {exc}")
                    self.workers[name] = worker
                    status = 201
                    logger.info("virtual CML worker %s created at %s", name, base_url)
            body = {"name": name, "base_url": base_url, "username": worker.username, "password": worker.password}
            return _json(body, status)

        @app.get("/_sim/workers")
        def sim_worker_list():
            with self.lock:
                return _json([self._worker_summary(w) for w in self.workers.values()])

        @app.get("/_sim/workers/<name>")
        def sim_worker_get(name):
            with self.lock:
                worker = self.workers.get(name)
                if worker is None:
                    return _error(404, f"no worker {name!r}")
                return _json(self._worker_summary(worker))

        @app.patch("/_sim/workers/<name>")
        def sim_worker_patch(name):
            payload = _body_json()
            if not isinstance(payload, dict):
                return _error(400, "body must be an object")
            with self.lock:
                worker = self.workers.get(name)
                if worker is None:
                    return _error(404, f"no worker {name!r}")
                try:
                    self._configure_worker(worker, payload)
                except (TypeError, ValueError) as exc:
                    return _error(400, f"bad worker options: {exc}")
                return _json(self._worker_summary(worker))

        @app.delete("/_sim/workers/<name>")
        def sim_worker_delete(name):
            with self.lock:
                if self.workers.pop(name, None) is None:
                    return _error(404, f"no worker {name!r}")
            return _json({"deleted": name})

        @app.post("/_sim/workers/<name>/expire_tokens")
        def sim_expire_tokens(name):
            with self.lock:
                worker = self.workers.get(name)
                if worker is None:
                    return _error(404, f"no worker {name!r}")
                expired = len(worker.tokens)
                worker.tokens.clear()
            return _json({"expired": expired})

        @app.delete("/_sim/workers/<name>/labs/<lab_id>")
        def sim_lab_vanish(name, lab_id):
            with self.lock:
                worker = self.workers.get(name)
                if worker is None or worker.labs.pop(lab_id, None) is None:
                    return _error(404, f"no lab {lab_id!r} on worker {name!r}")
            return _json({"vanished": lab_id})

        @app.patch("/_sim/workers/<name>/labs/<lab_id>")
        @app.patch("/_sim/workers/<name>/labs/<lab_id>/nodes/<node_id>")
        def sim_nodes_stuck(name, lab_id, node_id=None):
            payload = _body_json()
            stuck = payload.get("stuck") if isinstance(payload, dict) else "?"
            if stuck is not None and stuck not in STUCK_STATES:
                return _error(400, f"stuck must be one of {sorted(STUCK_STATES)} or null")
            with self.lock:
                worker = self.workers.get(name)
                lab = worker.labs.get(lab_id) if worker else None
                if lab is None:
                    return _error(404, f"no lab {lab_id!r} on worker {name!r}")
                nodes = list(lab.nodes.values()) if node_id is None else [lab.nodes.get(node_id)]
                if None in nodes:
                    return _error(404, f"no node {node_id!r} in lab {lab_id!r}")
                for node in nodes:
                    node.stuck = stuck
                return _json({"nodes": {node.id: self.node_state(worker, node)[0] for node in nodes}})

    def _new_worker(self, name: str, payload: dict) -> SimWorker:
        username = payload.get("username") or self.username
        password = payload.get("password") or self.password
        if not isinstance(username, str) or not 1 <= len(username) <= 32 or not isinstance(password, str):
            raise ValueError("username must be 1 to 32 characters and password a string")
        worker = SimWorker(
            name=name,
            username=username,
            password=password,
            created_at=self.clock.time(),
            warmup=0.0,
            version=str(payload.get("version") or self.version),
        )
        worker.warmup = (
            float(payload["warmup"]) if payload.get("warmup") is not None else self.worker_timing(worker, "warmup")
        )
        self._configure_worker(worker, {k: v for k, v in payload.items() if k not in ("name", "warmup", "version")})
        if payload.get("licensed"):
            now = self.clock.time()
            worker.licence = SimLicence(status="COMPLETED", attempted_at=now, succeeded_at=now)
        return worker

    def _configure_worker(self, worker: SimWorker, options: dict) -> None:
        timings = options.get("timings")
        if timings is not None:
            if not isinstance(timings, dict):
                raise ValueError("timings must be an object of name: seconds")
            worker.timings |= {str(k): float(v) for k, v in timings.items()}
        if "ready" in options:
            ready = options["ready"]
            worker.ready_override = None if ready is None else bool(ready)
        if "warmup" in options:
            worker.warmup = float(options["warmup"])
        if "down" in options:
            worker.down = bool(options["down"])
        if "unreachable_for" in options:
            worker.unreachable_until = self.clock.time() + float(options["unreachable_for"])
        if "strict_delete" in options:
            worker.strict_delete = bool(options["strict_delete"])
        if "node_limit" in options:
            limit = options["node_limit"]
            worker.node_limit = None if limit is None else int(limit)
        if "registration_outcome" in options:
            outcome = str(options["registration_outcome"]).upper()
            if outcome not in ("COMPLETED", "FAILED"):
                raise ValueError("registration_outcome must be COMPLETED or FAILED")
            worker.registration_outcome = outcome
        if "deregistration_status" in options:
            status = int(options["deregistration_status"])
            if status not in (202, 204, 400):
                raise ValueError("deregistration_status must be 202, 204 or 400")
            worker.deregistration_status = status
