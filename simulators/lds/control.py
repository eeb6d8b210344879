"""The LDS simulator's own control routes (besides the common `/_sim/...` ones and the CloudEvents ones):
the candidate's side of a session and the content catalogue. Each view is `view(sim, **url_args)`."""

from flask import Flask, jsonify, request

from simulators.common_stateful import SimError, register_control
from simulators.lds.state import ENDED_STATES


def _running_session(sim, ldssession_id: str):
    session = sim._session(ldssession_id)
    if session.state in ENDED_STATES:
        raise SimError(409, f"LDS session has ended ({session.state})")
    return session


def sim_login(sim, ldssession_id):
    session = _running_session(sim, ldssession_id)
    sim._login(session)
    return jsonify(sim._session_json(session))


def sim_finish(sim, ldssession_id):
    session = _running_session(sim, ldssession_id)
    sim._finish(session, reason="candidate finished")
    return jsonify(sim._session_json(session))


def sim_vanish(sim, ldssession_id):
    sim._session(ldssession_id)
    del sim.sessions[ldssession_id]
    return jsonify({"deleted": ldssession_id})


def sim_catalogue(sim):
    payload = request.get_json(silent=True) or {}
    names = payload.get("form_qualified_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise SimError(400, "form_qualified_names must be a list of strings or null")
    sim.open_catalogue = names is None
    sim.catalogue = {n: sim.catalogue.get(n) or sim._lab_folder(n) for n in names or []}
    return jsonify({"form_qualified_names": names})


ROUTES = (
    ("POST", "/_sim/sessions/<ldssession_id>/login", sim_login),
    ("POST", "/_sim/sessions/<ldssession_id>/finish", sim_finish),
    ("DELETE", "/_sim/sessions/<ldssession_id>", sim_vanish),
    ("PUT", "/_sim/catalogue", sim_catalogue),
)


def register(sim, app: Flask) -> None:
    register_control(sim, app, ROUTES)
