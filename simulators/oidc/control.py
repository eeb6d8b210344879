"""The OIDC simulator's own control routes (besides the common `/_sim/...` ones): users with their groups,
clients, and how ID tokens are issued (tampered with, for the tests that must see them refused)."""

from flask import Flask, jsonify, request

from simulators.common_stateful import SimError, register_control

TAMPER_MODES = (None, "signature", "audience", "issuer", "expired", "nonce", "unknown_key", "groups")


def public_user(user: dict) -> dict:
    """A user as the control API shows it: everything but the password."""
    return {key: value for key, value in user.items() if key != "password"}


def _body() -> dict:
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise SimError(400, "body must be a JSON object")
    return payload


def sim_users(sim):
    return jsonify([public_user(user) for user in sim.users.values()])


def sim_put_user(sim, username):
    spec = _body()
    groups = spec.get("groups", [])
    if not (isinstance(groups, list) and all(isinstance(group, str) for group in groups)):
        raise SimError(400, "groups must be a list of strings")
    for field in ("password", "email", "name"):
        if spec.get(field) is not None and not isinstance(spec[field], str):
            raise SimError(400, f"{field} must be a string")
    return jsonify(public_user(sim.put_user(username, spec)))


def sim_delete_user(sim, username):
    if sim.users.pop(username, None) is None:
        raise SimError(404, f"no user {username}")
    return jsonify({"deleted": username})


def sim_put_client(sim, client_id):
    spec = _body()
    if not isinstance(spec.get("secret"), str) or not spec["secret"]:
        raise SimError(400, "secret must be a non-empty string")
    uris = spec.get("redirect_uris")
    if uris is not None and not (isinstance(uris, list) and all(isinstance(uri, str) for uri in uris)):
        raise SimError(400, "redirect_uris must be a list of strings or null (any loopback URL)")
    client = sim.put_client(client_id, spec)
    return jsonify({key: value for key, value in client.items() if key != "secret"})


def sim_id_token(sim):
    mode = _body().get("tamper")
    if mode not in TAMPER_MODES:
        raise SimError(400, f"tamper must be one of {', '.join(str(m) for m in TAMPER_MODES)}")
    sim.tamper = mode
    return jsonify({"tamper": mode})


ROUTES = (
    ("GET", "/_sim/users", sim_users),
    ("PUT", "/_sim/users/<username>", sim_put_user),
    ("DELETE", "/_sim/users/<username>", sim_delete_user),
    ("PUT", "/_sim/clients/<client_id>", sim_put_client),
    ("PUT", "/_sim/id-token", sim_id_token),
)


def register(sim, app: Flask) -> None:
    register_control(sim, app, ROUTES)
