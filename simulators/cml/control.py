"""The CML simulator's own control API (besides the common one; all under `/_sim/`).

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
- `PUT /_sim/workers/<name>/labs/<lab_id>/nodes/<node id or label>/configuration {"configuration": "..."}`:
  "configure" a running node, as a candidate at its console would (409 when the node is not running); CML's
  `extract_configuration` then stores it, and the lab's `download` carries it.
"""

import logging
import re
from functools import wraps
from typing import TYPE_CHECKING

from flask import Flask, request

from simulators.cml.serialise import worker_summary
from simulators.cml.state import SimLicence, SimWorker
from simulators.cml.web import body_json, error_response, json_response

if TYPE_CHECKING:
    from simulators.cml.app import CMLSimulator

logger = logging.getLogger("lcm.simulators.cml")

STUCK_STATES = {"QUEUED", "STARTED", "DISCONNECTED"}
WORKER_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# -- views -------------------------------------------------------------------------------


def sim_worker_create(sim: "CMLSimulator"):
    payload = body_json() or {}
    name = payload.get("name") if isinstance(payload, dict) else None
    if not isinstance(name, str) or not WORKER_NAME.match(name):
        return error_response(400, "name is required: 1-64 letters, digits, '.', '_' or '-'")
    base_url = f"{request.host_url.rstrip('/')}/w/{name}"
    with sim.lock:
        worker = sim.workers.get(name)
        status = 200
        if worker is None:
            try:
                worker = new_worker(sim, name, payload)
            except (TypeError, ValueError) as exc:
                return error_response(400, f"bad worker options: {exc}")
            sim.workers[name] = worker
            status = 201
            logger.info("virtual CML worker %s created at %s", name, base_url)
    body = {"name": name, "base_url": base_url, "username": worker.username, "password": worker.password}
    return json_response(body, status)


def sim_worker_list(sim: "CMLSimulator"):
    with sim.lock:
        return json_response([worker_summary(sim, w) for w in sim.workers.values()])


def sim_worker_get(sim: "CMLSimulator", name):
    with sim.lock:
        worker = sim.workers.get(name)
        if worker is None:
            return error_response(404, f"no worker {name!r}")
        return json_response(worker_summary(sim, worker))


def sim_worker_patch(sim: "CMLSimulator", name):
    payload = body_json()
    if not isinstance(payload, dict):
        return error_response(400, "body must be an object")
    with sim.lock:
        worker = sim.workers.get(name)
        if worker is None:
            return error_response(404, f"no worker {name!r}")
        try:
            configure_worker(sim, worker, payload)
        except (TypeError, ValueError) as exc:
            return error_response(400, f"bad worker options: {exc}")
        return json_response(worker_summary(sim, worker))


def sim_worker_delete(sim: "CMLSimulator", name):
    with sim.lock:
        if sim.workers.pop(name, None) is None:
            return error_response(404, f"no worker {name!r}")
    return json_response({"deleted": name})


def sim_expire_tokens(sim: "CMLSimulator", name):
    with sim.lock:
        worker = sim.workers.get(name)
        if worker is None:
            return error_response(404, f"no worker {name!r}")
        expired = len(worker.tokens)
        worker.tokens.clear()
    return json_response({"expired": expired})


def sim_lab_vanish(sim: "CMLSimulator", name, lab_id):
    with sim.lock:
        worker = sim.workers.get(name)
        if worker is None or worker.labs.pop(lab_id, None) is None:
            return error_response(404, f"no lab {lab_id!r} on worker {name!r}")
    return json_response({"vanished": lab_id})


def sim_nodes_stuck(sim: "CMLSimulator", name, lab_id, node_id=None):
    payload = body_json()
    stuck = payload.get("stuck") if isinstance(payload, dict) else "?"
    if stuck is not None and stuck not in STUCK_STATES:
        return error_response(400, f"stuck must be one of {sorted(STUCK_STATES)} or null")
    with sim.lock:
        worker = sim.workers.get(name)
        lab = worker.labs.get(lab_id) if worker else None
        if lab is None:
            return error_response(404, f"no lab {lab_id!r} on worker {name!r}")
        nodes = list(lab.nodes.values()) if node_id is None else [lab.nodes.get(node_id)]
        if None in nodes:
            return error_response(404, f"no node {node_id!r} in lab {lab_id!r}")
        for node in nodes:
            node.stuck = stuck
        return json_response({"nodes": {node.id: sim.node_state(worker, node)[0] for node in nodes}})


def sim_node_configure(sim: "CMLSimulator", name, lab_id, node_ref):
    payload = body_json()
    text = payload.get("configuration") if isinstance(payload, dict) else None
    if not isinstance(text, str):
        return error_response(400, "configuration (text) is required")
    with sim.lock:
        worker = sim.workers.get(name)
        lab = worker.labs.get(lab_id) if worker else None
        if lab is None:
            return error_response(404, f"no lab {lab_id!r} on worker {name!r}")
        node = lab.nodes.get(node_ref) or next((n for n in lab.nodes.values() if n.label == node_ref), None)
        if node is None:
            return error_response(404, f"no node {node_ref!r} in lab {lab_id!r}")
        if node.phase != "RUNNING":
            return error_response(409, f"node {node.label!r} is not running")
        node.running_config = text
        return json_response({"node": node.id, "label": node.label, "configured": True})


# (rules, methods, view): the endpoint is the view's name.
CONTROL_ROUTES = [
    (["/_sim/workers"], ["POST"], sim_worker_create),
    (["/_sim/workers"], ["GET"], sim_worker_list),
    (["/_sim/workers/<name>"], ["GET"], sim_worker_get),
    (["/_sim/workers/<name>"], ["PATCH"], sim_worker_patch),
    (["/_sim/workers/<name>"], ["DELETE"], sim_worker_delete),
    (["/_sim/workers/<name>/expire_tokens"], ["POST"], sim_expire_tokens),
    (["/_sim/workers/<name>/labs/<lab_id>"], ["DELETE"], sim_lab_vanish),
    (
        ["/_sim/workers/<name>/labs/<lab_id>/nodes/<node_id>", "/_sim/workers/<name>/labs/<lab_id>"],
        ["PATCH"],
        sim_nodes_stuck,
    ),
    (["/_sim/workers/<name>/labs/<lab_id>/nodes/<node_ref>/configuration"], ["PUT"], sim_node_configure),
]


def register_control(sim: "CMLSimulator", app: Flask) -> None:
    for rules, methods, view in CONTROL_ROUTES:
        bound = _bound(sim, view)
        for rule in rules:
            app.add_url_rule(rule, endpoint=view.__name__, view_func=bound, methods=methods)


def _bound(sim: "CMLSimulator", view):
    @wraps(view)
    def endpoint(**kwargs):
        return view(sim, **kwargs)

    return endpoint


# -- workers -----------------------------------------------------------------------------


def new_worker(sim: "CMLSimulator", name: str, payload: dict) -> SimWorker:
    """A worker made by `POST /_sim/workers` (ValueError or TypeError for bad options)."""
    username = payload.get("username") or sim.username
    password = payload.get("password") or sim.password
    if not isinstance(username, str) or not 1 <= len(username) <= 32 or not isinstance(password, str):
        raise ValueError("username must be 1 to 32 characters and password a string")
    worker = SimWorker(
        name=name,
        username=username,
        password=password,
        created_at=sim.clock.time(),
        warmup=0.0,
        version=str(payload.get("version") or sim.version),
    )
    worker.warmup = (
        float(payload["warmup"]) if payload.get("warmup") is not None else sim.worker_timing(worker, "warmup")
    )
    configure_worker(sim, worker, {k: v for k, v in payload.items() if k not in ("name", "warmup", "version")})
    if payload.get("licensed"):
        now = sim.clock.time()
        worker.licence = SimLicence(status="COMPLETED", attempted_at=now, succeeded_at=now)
    return worker


def configure_worker(sim: "CMLSimulator", worker: SimWorker, options: dict) -> None:
    """Apply the worker options present in `options`, in a fixed order (ValueError or TypeError for a bad one)."""
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
        worker.unreachable_until = sim.clock.time() + float(options["unreachable_for"])
    if "strict_delete" in options:
        worker.strict_delete = bool(options["strict_delete"])
    _configure_licensing(worker, options)


def _configure_licensing(worker: SimWorker, options: dict) -> None:
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
