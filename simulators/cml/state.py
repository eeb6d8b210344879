"""The state of the simulated CML controllers and what time does to it.

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

Timings (seconds; `zero_delay` makes all but `token_lifetime` zero; a worker's own `timings`
always apply): `warmup`, `node_queue`, `node_boot` and `node_boot.<node definition>`,
`licence_registration`, `token_lifetime`, and `latency.<short operation name>` (e.g.
`latency.import_lab`) slept before answering.
"""

import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import jwt
from flask import has_request_context, request

from simulators.common import Clock, Faults, iso

CML_VERSION = "2.9.0"
TOKEN_ISSUER = "com.cisco.virl"

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
    "extract_node_config": "extract_node_configuration_handler_labs__lab_id__nodes__node_id__extract_configuration_put",
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

UNSCALED_TIMINGS = {"token_lifetime"}  # a lifetime, not a delay: zero_delay leaves it alone
RUNNING_NODE_STATES = {"QUEUED", "STARTED", "BOOTED", "DISCONNECTED"}
_UUID4 = re.compile(r"^[\da-f]{8}-[\da-f]{4}-4[\da-f]{3}-[89ab][\da-f]{3}-[\da-f]{12}$")


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
    # The configuration the running device holds now (what a candidate typed; `/_sim/` sets it): booted from
    # the stored `data["configuration"]`, copied back into it by extract_configuration, lost by a wipe.
    running_config: str | None = None
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


def find_lab(worker: SimWorker, lab_id: str) -> SimLab:
    if not _UUID4.match(lab_id):
        raise CMLError(400, f"Invalid lab id: {lab_id}")
    lab = worker.labs.get(lab_id)
    if lab is None:
        raise CMLError(404, f"Lab not found: {lab_id}")
    return lab


def find_node(lab: SimLab, node_id: str) -> SimNode:
    node = lab.nodes.get(node_id)
    if node is None:
        raise CMLError(404, f"Node not found: {node_id}")
    return node


class CMLState:
    """The time-driven behaviour of the workers; mixed into `CMLSimulator`, which supplies these attributes."""

    clock: Clock
    timings: dict
    zero_delay: bool
    faults: CMLFaults
    lock: threading.RLock
    workers: dict[str, SimWorker]
    node_definitions: frozenset[str]

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

    def running_nodes(self, worker: SimWorker) -> list[SimNode]:
        """The worker's nodes that are queued, booting, booted or disconnected now."""
        return [
            node
            for lab in worker.labs.values()
            for node in lab.nodes.values()
            if self.node_state(worker, node)[0] in RUNNING_NODE_STATES
        ]

    def record_progress(self, worker: SimWorker) -> None:
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
            self.add_telemetry(worker, "license_info", {"registration_status": licence.status}, at=licence.completes_at)
        for lab in worker.labs.values():
            for node in lab.nodes.values():
                if node.phase == "RUNNING":
                    self._record_node_progress(worker, lab, node, now)

    def _record_node_progress(self, worker: SimWorker, lab: SimLab, node: SimNode, now: float) -> None:
        queue = self.worker_timing(worker, "node_queue")
        state, _ = self.node_state(worker, node)
        if state in ("STARTED", "BOOTED") and not node.start_recorded:
            node.start_recorded = True
            at = (node.started_at or now) + queue
            self.add_telemetry(worker, "start_node", {"lab_id": lab.id, "node_id": node.id}, at=at)
            self.add_lab_event(lab, "STATE_CHANGED", "NODE", node.id, {"state": "STARTED"}, {"state": "QUEUED"}, at)
        if state == "BOOTED" and not node.boot_recorded:
            node.boot_recorded = True
            boot = self.worker_timing(worker, f"node_boot.{node.node_definition}", "node_boot")
            at = (node.started_at or now) + queue + boot
            self.add_telemetry(
                worker,
                "boot_node",
                {"lab_id": lab.id, "node_id": node.id, "node_definition": node.node_definition},
                at=at,
            )
            self.add_lab_event(lab, "STATE_CHANGED", "NODE", node.id, {"state": "BOOTED"}, {"state": "STARTED"}, at)

    # -- records -------------------------------------------------------------------------

    def now_iso(self, at: float | None = None) -> str:
        return iso(datetime.fromtimestamp(self.clock.time() if at is None else at, UTC))

    def add_telemetry(self, worker: SimWorker, category: str, data: dict, at: float | None = None) -> None:
        worker.telemetry.append({"category": category, "timestamp": self.now_iso(at), "data": data})

    def add_lab_event(self, lab, event, element_type, element_id, data, previous=None, at=None) -> None:
        lab.events.append(
            {
                "lab_id": lab.id,
                "event": event,
                "element_type": element_type,
                "element_id": element_id,
                "data": data,
                "previous": previous or {},
                "timestamp": self.now_iso(at),
            }
        )

    # -- auth ----------------------------------------------------------------------------

    def issue_token(self, worker: SimWorker, operation: str) -> str:
        now = int(self.clock.time())
        lifetime = self.worker_timing(worker, "token_lifetime")
        expires = now - 1 if self.faults.take_flag("expire_tokens", operation) else now + int(lifetime)
        claims = {"iss": TOKEN_ISSUER, "iat": now, "exp": expires, "sub": worker.user_id, "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, worker.secret, algorithm="HS256")
        worker.tokens = {t for t in worker.tokens if _token_expiry(worker, t) > now}
        worker.tokens.add(token)
        return token

    def check_token(self, worker: SimWorker) -> str:
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

    # -- lab actions ---------------------------------------------------------------------

    def start_nodes(self, worker: SimWorker, lab: SimLab, nodes) -> None:
        now = self.clock.time()
        for node in nodes:
            if node.phase == "RUNNING":
                continue
            previous = node.phase
            node.phase = "RUNNING"
            node.started_at = now
            if node.running_config is None:
                node.running_config = node.data.get("configuration")
            node.start_recorded = node.boot_recorded = False
            for iface_id in node.interfaces:
                iface = lab.interfaces[iface_id]
                iface.mac_address = iface.mac_address or new_mac()
            self.add_telemetry(worker, "queue_node", {"lab_id": lab.id, "node_id": node.id})
            self.add_lab_event(lab, "STATE_CHANGED", "NODE", node.id, {"state": "QUEUED"}, {"state": previous})

    def stop_nodes(self, worker: SimWorker, lab: SimLab, nodes) -> None:
        for node in nodes:
            if node.phase != "RUNNING":
                continue
            previous = self.node_state(worker, node)[0]
            node.phase = "STOPPED"
            node.started_at = None
            self.add_telemetry(worker, "stop_node", {"lab_id": lab.id, "node_id": node.id})
            self.add_lab_event(lab, "STATE_CHANGED", "NODE", node.id, {"state": "STOPPED"}, {"state": previous})

    def wipe_nodes(self, worker: SimWorker, lab: SimLab, nodes) -> None:
        for node in nodes:
            if node.phase == "DEFINED_ON_CORE":
                continue
            node.phase = "DEFINED_ON_CORE"
            node.stuck = None
            node.running_config = None
            self.add_telemetry(worker, "wipe_node", {"lab_id": lab.id, "node_id": node.id})
            self.add_lab_event(
                lab, "STATE_CHANGED", "NODE", node.id, {"state": "DEFINED_ON_CORE"}, {"state": "STOPPED"}
            )

    def check_can_start(self, worker: SimWorker, lab: SimLab, starting: int) -> None:
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


def _token_expiry(worker: SimWorker, token: str) -> float:
    try:
        return jwt.decode(
            token, worker.secret, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False}
        )["exp"]
    except jwt.InvalidTokenError:
        return 0.0
