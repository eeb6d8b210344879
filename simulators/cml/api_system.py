"""The CML REST views for authentication, the system and licensing.

Each view takes the simulator and the `SimWorker` addressed, after `api.register_api` has checked the
token (but for `api.PUBLIC`), applied faults and latency and recorded the time-driven progress.
"""

import re

from simulators.cml import serialise
from simulators.cml.state import OPERATIONS, CMLError, CMLState, SimLicence, SimWorker
from simulators.cml.web import body_json, json_response, no_content, query_flag

_LICENCE_TOKEN = re.compile(r"^[a-zA-Z\d+/%=-]{1,256}$")


def _check_credentials(worker: SimWorker) -> None:
    body = body_json()
    if not isinstance(body, dict) or not isinstance(body.get("username"), str) or "password" not in body:
        raise CMLError(400, "Body must be {username, password}.")
    if not 1 <= len(body["username"]) <= 32:
        raise CMLError(400, "username must be 1 to 32 characters.")
    if body["username"] != worker.username or body["password"] != worker.password:
        raise CMLError(403, "Authentication failed!")


# -- authentication ----------------------------------------------------------------------


def authenticate(sim: CMLState, worker: SimWorker):
    _check_credentials(worker)
    return json_response(sim.issue_token(worker, OPERATIONS["authenticate"]))


def auth_extended(sim: CMLState, worker: SimWorker):
    _check_credentials(worker)
    token = sim.issue_token(worker, OPERATIONS["auth_extended"])
    return json_response(
        {"username": worker.username, "id": worker.user_id, "token": token, "admin": True, "error": None}
    )


def authok(sim: CMLState, worker: SimWorker):
    return json_response("OK")


def logout(sim: CMLState, worker: SimWorker):
    token = sim.check_token(worker)
    if query_flag("clear_all_sessions"):
        worker.tokens.clear()
    else:
        worker.tokens.discard(token)
    return json_response(True)


# -- system ------------------------------------------------------------------------------


def system_information(sim: CMLState, worker: SimWorker):
    return json_response(
        {
            "version": worker.version,
            "ready": sim.is_ready(worker),
            "allow_ssh_pubkey_auth": False,
            "oui": "52:54:00:00:00:00",
        }
    )


def system_health(sim: CMLState, worker: SimWorker):
    compute = serialise.compute_health(sim, worker)
    return json_response(
        {
            "valid": compute["valid"],
            "is_licensed": worker.licence.status == "COMPLETED",
            "is_enterprise": True,
            "computes": {worker.compute_id: compute},
            "controller": {"core_connected": True, "nodes_loaded": True, "images_loaded": True, "valid": True},
        }
    )


def system_stats(sim: CMLState, worker: SimWorker):
    return json_response(serialise.system_stats(sim, worker))


def compute_hosts(sim: CMLState, worker: SimWorker):
    ready = sim.is_ready(worker)
    nodes = sim.running_nodes(worker)
    total = sum(len(lab.nodes) for lab in worker.labs.values())
    return json_response(
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


def telemetry_events(sim: CMLState, worker: SimWorker):
    return json_response(worker.telemetry)


def users(sim: CMLState, worker: SimWorker):
    # virl2-client reads it to name a lab's owner.
    return json_response(
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
                "created": sim.now_iso(worker.created_at),
                "modified": sim.now_iso(worker.created_at),
                "directory_dn": "",
                "labs": list(worker.labs),
                "pubkey_info": None,
            }
        ]
    )


# -- licensing ---------------------------------------------------------------------------


def licensing(sim: CMLState, worker: SimWorker):
    return json_response(serialise.licensing_json(sim, worker))


def register_licence(sim: CMLState, worker: SimWorker):
    body = body_json()
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
    fails = sim.faults.take_flag("registration_fails", OPERATIONS["register_licence"])
    now = sim.clock.time()
    worker.licence = SimLicence(
        status="IN_PROGRESS",
        attempted_at=now,
        completes_at=now + sim.worker_timing(worker, "licence_registration"),
        outcome="FAILED" if fails or worker.registration_outcome == "FAILED" else "COMPLETED",
    )
    sim.record_progress(worker)
    return no_content()


def deregister_licence(sim: CMLState, worker: SimWorker):
    licence = worker.licence
    if licence.status == "IN_PROGRESS":
        raise CMLError(409, "Deregistration cannot be requested while a registration is in progress.")
    if licence.status != "COMPLETED" or worker.deregistration_status == 400:
        return no_content(400)  # the spec declares no body for "already deregistered"
    worker.licence = SimLicence()
    sim.add_telemetry(worker, "license_info", {"registration_status": "UNREGISTERED"})
    return no_content(202 if worker.deregistration_status == 202 else 204)


def renew(sim: CMLState, worker: SimWorker):
    """Renewing the registration or the authorization: a no-op for a registered product."""
    if worker.licence.status != "COMPLETED":
        raise CMLError(400, "The product is not registered.")
    return no_content()
