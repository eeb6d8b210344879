"""The Grading Engine simulator's own control routes (besides the common `/_sim/...` ones and the CloudEvents
ones): finishing grading now, scripted outcomes and token revocation. Each view is `view(sim, **url_args)`."""

from flask import Flask, jsonify, request

from simulators.common_stateful import is_int, is_positive_int, register_control
from simulators.grading.state import Problem


def _score(payload: dict) -> int | None:
    score = payload.get("score")
    if score is not None and not is_int(score):
        raise Problem(400, "Bad Request", "score must be an integer")
    return score


def sim_complete(sim, session_id):
    payload = request.get_json(silent=True) or {}
    score = _score(payload)
    for session, part in sim._grading_parts(session_id, payload.get("part_id")):
        job = sim.jobs.pop((session["id"], part["id"]))
        sim._complete(session, part, job | {"outcome": "complete", "score": score})
    return jsonify(sim._session(session_id))


def sim_fail(sim, session_id):
    payload = request.get_json(silent=True) or {}
    reason = str(payload.get("reason") or "grading failed (simulated)")
    for session, part in sim._grading_parts(session_id, payload.get("part_id")):
        sim.jobs.pop((session["id"], part["id"]))
        sim._fail(session, part, reason)
    return jsonify(sim._session(session_id))


def sim_outcomes(sim):
    payload = request.get_json(silent=True) or {}
    if payload.get("outcome") not in ("complete", "fail", "hang"):
        raise Problem(400, "Bad Request", "outcome must be complete, fail or hang")
    times = payload.get("times", 1)
    if times is not None and not is_positive_int(times):
        raise Problem(400, "Bad Request", "times must be a positive integer or null")
    outcome = {
        "outcome": payload["outcome"],
        "score": _score(payload),
        "reason": payload.get("reason"),
        "session_id": payload.get("session_id"),
        "part_id": payload.get("part_id"),
        "times": times,
    }
    sim.outcomes.append(outcome)
    return jsonify(outcome), 201


def sim_outcomes_clear(sim):
    sim.outcomes.clear()
    return jsonify({"cleared": True})


def sim_revoke(sim):
    revoked = len(sim.active_tokens)
    sim.active_tokens.clear()
    return jsonify({"revoked": revoked})


def sim_clear_scoring(sim, part_id):
    """A form whose scoring requirements were never set: its ruleset carries no cut score."""
    sim._toolkit(part_id)["scoring"] = {}
    return jsonify({"part_id": part_id, "scoring": {}})


ROUTES = (
    ("POST", "/_sim/grading/<session_id>/complete", sim_complete),
    ("DELETE", "/_sim/toolkits/<path:part_id>/scoring", sim_clear_scoring),
    ("POST", "/_sim/grading/<session_id>/fail", sim_fail),
    ("POST", "/_sim/grading/outcomes", sim_outcomes),
    ("DELETE", "/_sim/grading/outcomes", sim_outcomes_clear),
    ("POST", "/_sim/tokens/revoke", sim_revoke),
)


def register(sim, app: Flask) -> None:
    register_control(sim, app, ROUTES)
