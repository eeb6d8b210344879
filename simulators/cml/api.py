"""The CML REST API of every virtual worker, at `/w/<worker>/api/v0<rule>`, each view under its spec operationId.

Around every view: a worker that is down or unreachable drops the connection; an unknown worker is a 404;
then the request is recorded and injected faults apply (`Simulator.operation`), the worker's
`latency.<short name>` is slept, a `reset` fault drops the connection, and under the simulator's lock the
bearer token is checked (but for `PUBLIC` operations) and the time-driven progress recorded before the view
runs. A `CMLError` is answered as `{"code", "description"}`.
"""

import time
from functools import partial, wraps
from typing import TYPE_CHECKING

from flask import Flask

from simulators.cml import api_labs as labs
from simulators.cml import api_system as system
from simulators.cml.state import OPERATIONS, CMLError, CMLState, DropConnection
from simulators.cml.web import drop_connection, error_response

if TYPE_CHECKING:
    from simulators.cml.app import CMLSimulator

# (short name in OPERATIONS, rule under /w/<worker>/api/v0, methods, view), in the order they are registered.
ROUTES = [
    ("authenticate", "/authenticate", ["POST"], system.authenticate),
    ("auth_extended", "/auth_extended", ["POST"], system.auth_extended),
    ("authok", "/authok", ["GET"], system.authok),
    ("logout", "/logout", ["DELETE"], system.logout),
    ("system_information", "/system_information", ["GET"], system.system_information),
    ("system_health", "/system_health", ["GET"], system.system_health),
    ("system_stats", "/system_stats", ["GET"], system.system_stats),
    ("compute_hosts", "/system/compute_hosts", ["GET"], system.compute_hosts),
    ("telemetry_events", "/telemetry/events", ["GET"], system.telemetry_events),
    ("users", "/users", ["GET"], system.users),
    ("labs", "/labs", ["GET"], labs.labs),
    ("import_lab", "/import", ["POST"], labs.import_lab),
    ("get_lab", "/labs/<lab_id>", ["GET"], labs.get_lab),
    ("delete_lab", "/labs/<lab_id>", ["DELETE"], labs.delete_lab),
    ("lab_state", "/labs/<lab_id>/state", ["GET"], labs.lab_state),
    ("start_lab", "/labs/<lab_id>/start", ["PUT"], labs.start_lab),
    ("stop_lab", "/labs/<lab_id>/stop", ["PUT"], labs.stop_lab),
    ("wipe_lab", "/labs/<lab_id>/wipe", ["PUT"], labs.wipe_lab),
    ("check_converged", "/labs/<lab_id>/check_if_converged", ["GET"], labs.check_converged),
    ("lab_element_state", "/labs/<lab_id>/lab_element_state", ["GET"], labs.lab_element_state),
    ("simulation_stats", "/labs/<lab_id>/simulation_stats", ["GET"], labs.simulation_stats),
    ("download_lab", "/labs/<lab_id>/download", ["GET"], labs.download_lab),
    ("topology", "/labs/<lab_id>/topology", ["GET"], labs.topology),
    ("lab_events", "/labs/<lab_id>/events", ["GET"], labs.lab_events),
    ("layer3_addresses", "/labs/<lab_id>/layer3_addresses", ["GET"], labs.layer3_addresses),
    ("nodes", "/labs/<lab_id>/nodes", ["GET"], labs.nodes),
    ("get_node", "/labs/<lab_id>/nodes/<node_id>", ["GET"], labs.get_node),
    ("patch_node", "/labs/<lab_id>/nodes/<node_id>", ["PATCH"], labs.patch_node),
    ("node_state", "/labs/<lab_id>/nodes/<node_id>/state", ["GET"], labs.node_state),
    ("start_node", "/labs/<lab_id>/nodes/<node_id>/state/start", ["PUT"], labs.start_node),
    ("stop_node", "/labs/<lab_id>/nodes/<node_id>/state/stop", ["PUT"], labs.stop_node),
    ("wipe_node", "/labs/<lab_id>/nodes/<node_id>/wipe_disks", ["PUT"], labs.wipe_node),
    (
        "extract_node_config",
        "/labs/<lab_id>/nodes/<node_id>/extract_configuration",
        ["PUT"],
        labs.extract_node_configuration,
    ),
    ("node_interfaces", "/labs/<lab_id>/nodes/<node_id>/interfaces", ["GET"], labs.node_interfaces),
    ("console_key", "/labs/<lab_id>/nodes/<node_id>/keys/console", ["GET"], labs.console_key),
    ("get_interface", "/labs/<lab_id>/interfaces/<interface_id>", ["GET"], labs.get_interface),
    ("links", "/labs/<lab_id>/links", ["GET"], labs.links),
    ("get_link", "/labs/<lab_id>/links/<link_id>", ["GET"], labs.get_link),
    ("licensing", "/licensing", ["GET"], system.licensing),
    ("register_licence", "/licensing/registration", ["POST"], system.register_licence),
    ("deregister_licence", "/licensing/deregistration", ["DELETE"], system.deregister_licence),
    ("renew_registration", "/licensing/registration/renew", ["PUT"], system.renew),
    ("renew_authorization", "/licensing/authorization/renew", ["PUT"], system.renew),
]

# The operations answered without a bearer token.
PUBLIC = {"authenticate", "auth_extended", "system_information"}


def register_api(sim: "CMLSimulator", app: Flask) -> None:
    """Add every view of `ROUTES` to `app`, as endpoint `cml_<short name>`."""
    for short, rule, methods, view in ROUTES:
        app.add_url_rule(
            f"/w/<worker>/api/v0{rule}", endpoint=f"cml_{short}", view_func=_endpoint(sim, short, view), methods=methods
        )


def _endpoint(sim: "CMLSimulator", short: str, view):
    recorded = sim.operation(OPERATIONS[short])(partial(_answer, sim, short, view))

    @wraps(view)
    def endpoint(worker: str, **kwargs):
        sim_worker = sim.worker_named(worker)
        if sim_worker is not None and (sim_worker.down or sim.clock.time() < sim_worker.unreachable_until):
            return drop_connection()
        return recorded(worker=worker, **kwargs)

    return endpoint


def _answer(sim: CMLState, short: str, view, worker: str, **kwargs):
    sim_worker = sim.workers.get(worker)
    if sim_worker is None:
        return error_response(404, f"No simulated CML worker named {worker!r}.")
    latency = sim.worker_timing(sim_worker, f"latency.{short}")
    if latency:
        time.sleep(latency)
    try:
        if sim.faults.take_flag("reset", OPERATIONS[short]):
            raise DropConnection
        with sim.lock:
            if short not in PUBLIC:
                sim.check_token(sim_worker)
            sim.record_progress(sim_worker)
            return view(sim, sim_worker, **kwargs)
    except CMLError as exc:
        return error_response(exc.status, exc.description)
    except DropConnection:
        return drop_connection()
