"""The OIDC simulator's provider routes: discovery, authorize (login form or `login_hint`), token (code + PKCE),
JWKS and userinfo. Each view is `view(sim, realm, ...)`, recorded and faulted under its operation name."""

import base64
import hashlib
import hmac
import json
import secrets
from html import escape
from urllib.parse import urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, jsonify, redirect, request
from jwt.algorithms import RSAAlgorithm

from simulators.common import bind

PROTOCOL = "/realms/<realm>/protocol/openid-connect"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issuer(sim) -> str:
    return f"{request.host_url}realms/{sim.realm}"


def discovery(sim, realm):
    if realm != sim.realm:
        return jsonify({"error": "Realm does not exist"}), 404
    base = f"{issuer(sim)}/protocol/openid-connect"
    return jsonify(
        {
            "issuer": issuer(sim),
            "authorization_endpoint": f"{base}/auth",
            "token_endpoint": f"{base}/token",
            "userinfo_endpoint": f"{base}/userinfo",
            "jwks_uri": f"{base}/certs",
            "end_session_endpoint": f"{base}/logout",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["S256", "plain"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "preferred_username", "email", "groups"],
        }
    )


def jwks(sim, realm):
    if realm != sim.realm:
        return jsonify({"error": "Realm does not exist"}), 404
    key = json.loads(RSAAlgorithm.to_jwk(sim.key.public_key()))
    return jsonify({"keys": [key | {"kid": sim.kid, "alg": "RS256", "use": "sig"}]})


# -- authorize ---------------------------------------------------------------------------------


def authorize(sim, realm):
    """GET shows the login form (or, with `login_hint` naming a user, answers with a code at once); POST is the
    form's answer. A request whose client or redirect URI is wrong gets an error page, never a redirect."""
    params = request.values
    with sim.lock:
        problem = _authorize_problem(sim, realm, params)
        if problem:
            return _page("Sign-in error", f"<p>{escape(problem)}</p>", status=400)
        redirect_uri = params["redirect_uri"]
        client = sim.clients[params["client_id"]]
        if params.get("response_type") != "code":
            return _back(redirect_uri, params, error="unsupported_response_type")
        if "openid" not in params.get("scope", "").split():
            return _back(redirect_uri, params, error="invalid_scope")
        if client["pkce"] and not params.get("code_challenge"):
            return _back(redirect_uri, params, error="invalid_request", description="PKCE code_challenge required")
        if params.get("code_challenge") and params.get("code_challenge_method", "plain") not in ("S256", "plain"):
            return _back(redirect_uri, params, error="invalid_request", description="unknown code_challenge_method")
        username = _signed_in(sim, params)
        if username is None:
            failed = request.method == "POST"
            return _login_form(params, "Invalid username or password." if failed else "", status=401 if failed else 200)
        code = secrets.token_urlsafe(32)
        sim.codes[code] = {
            "client_id": client["client_id"],
            "redirect_uri": redirect_uri,
            "username": username,
            "nonce": params.get("nonce"),
            "scope": params.get("scope", ""),
            "code_challenge": params.get("code_challenge"),
            "code_challenge_method": params.get("code_challenge_method", "plain"),
            "expires": sim.clock.time() + sim.timing("code_ttl"),
            "auth_time": int(sim.clock.time()),
        }
    return _back(redirect_uri, params, code=code)


def _authorize_problem(sim, realm, params) -> str:
    if realm != sim.realm:
        return "Realm does not exist."
    client = sim.clients.get(params.get("client_id", ""))
    if client is None:
        return "Client not found."
    redirect_uri = params.get("redirect_uri", "")
    allowed = client["redirect_uris"]
    if allowed is None:
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK_HOSTS:
            return "Invalid parameter: redirect_uri."
    elif redirect_uri not in allowed:
        return "Invalid parameter: redirect_uri."
    return ""


def _signed_in(sim, params) -> str | None:
    """The user this request signs in: the form's username and password (POST), or a known `login_hint` (GET)."""
    if request.method == "POST":
        user = sim.users.get(request.form.get("username", ""))
        supplied = request.form.get("password", "").encode()
        if user is not None and hmac.compare_digest(user["password"].encode(), supplied):
            return user["username"]
        return None
    hint = params.get("login_hint", "")
    return hint if hint in sim.users else None


def _back(redirect_uri: str, params, **answer) -> Response:
    """Redirect to the client with `answer` (code or error) and the request's `state`."""
    if "description" in answer:
        answer["error_description"] = answer.pop("description")
    if params.get("state"):
        answer["state"] = params["state"]
    separator = "&" if "?" in redirect_uri else "?"
    return redirect(f"{redirect_uri}{separator}{urlencode(answer)}", code=302)


def _login_form(params, error: str, status: int) -> Response:
    hidden = "".join(
        f'<input type="hidden" name="{escape(key)}" value="{escape(value)}">'
        for key, value in params.items()
        if key not in ("username", "password")
    )
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = (
        f'{message}<form method="post">{hidden}'
        '<label>Username <input name="username" id="username" autocomplete="username"></label>'
        '<label>Password <input name="password" id="password" type="password"></label>'
        '<button type="submit" id="kc-login">Sign In</button></form>'
    )
    return _page("Sign in to LCM SSO (simulator)", body, status=status)


def _page(title: str, body: str, status: int = 200) -> Response:
    head = f"<!doctype html><html><head><title>{escape(title)}</title></head>"
    html = f"{head}<body><h1>{escape(title)}</h1>{body}</body></html>"
    return Response(html, status=status, mimetype="text/html")


# -- token -------------------------------------------------------------------------------------


def token(sim, realm):
    if realm != sim.realm:
        return jsonify({"error": "Realm does not exist"}), 404
    form = request.form
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    if request.authorization is not None and request.authorization.type == "basic":
        client_id, secret = request.authorization.username or "", request.authorization.password or ""
    with sim.lock:
        client = sim.clients.get(client_id)
        if client is None or not hmac.compare_digest(client["secret"].encode(), secret.encode()):
            return _token_error("invalid_client", "Invalid client credentials", 401)
        if form.get("grant_type") != "authorization_code":
            return _token_error("unsupported_grant_type", "use authorization_code")
        grant = sim.codes.pop(form.get("code", ""), None)  # a code is good once
        problem = _grant_problem(sim, grant, client_id, form)
        if problem:
            return _token_error("invalid_grant", problem)
        user = sim.users.get(grant["username"])
        if user is None:
            return _token_error("invalid_grant", "User not found")
        access_token = secrets.token_urlsafe(32)
        sim.access_tokens[access_token] = user["username"]
        ttl = int(sim.timing("token_ttl"))
        id_token = _id_token(sim, user, client_id, grant, ttl)
    return jsonify(
        {
            "access_token": access_token,
            "expires_in": ttl,
            "token_type": "Bearer",
            "id_token": id_token,
            "scope": grant["scope"],
        }
    )


def _grant_problem(sim, grant: dict | None, client_id: str, form) -> str:
    if grant is None or grant["expires"] < sim.clock.time():
        return "Code not valid"
    if grant["client_id"] != client_id:
        return "Code not issued to this client"
    if form.get("redirect_uri") != grant["redirect_uri"]:
        return "Incorrect redirect_uri"
    challenge = grant["code_challenge"]
    if challenge is None:
        return ""
    verifier = form.get("code_verifier", "")
    if not verifier:
        return "PKCE verification failed: code_verifier missing"
    if grant["code_challenge_method"] == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        verifier = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    if not hmac.compare_digest(verifier.encode(), challenge.encode()):
        return "PKCE verification failed: code_verifier does not match"
    return ""


def _token_error(error: str, description: str, status: int = 400):
    return jsonify({"error": error, "error_description": description}), status


def _id_token(sim, user: dict, client_id: str, grant: dict, ttl: int) -> str:
    """The ID token, signed with the realm's key, or tampered with as `sim.tamper` says."""
    now = int(sim.clock.time())
    claims = {
        "iss": issuer(sim),
        "sub": user["sub"],
        "aud": client_id,
        "azp": client_id,
        "exp": now + ttl,
        "iat": now,
        "auth_time": grant["auth_time"],
        "nonce": grant["nonce"],
        "typ": "ID",
        "preferred_username": user["username"],
        "email": user["email"],
        "email_verified": True,
        "name": user["name"],
        "groups": list(user["groups"]),
    }
    mode = sim.tamper
    claims |= {
        "audience": {"aud": "some-other-client", "azp": "some-other-client"},
        "issuer": {"iss": f"{request.host_url}realms/not-{sim.realm}"},
        "expired": {"exp": now - 120, "iat": now - ttl - 120},
        "nonce": {"nonce": "not-the-nonce-you-sent"},
    }.get(mode, {})
    key = _unknown_key() if mode == "unknown_key" else sim.key
    signed = jwt.encode(claims, key, algorithm="RS256", headers={"kid": sim.kid})
    if mode in ("signature", "groups"):
        header, _payload, signature = signed.split(".")
        changed = claims | {"groups": [*claims["groups"], "lcm-admins"], "preferred_username": "someone-else"}
        payload = base64.urlsafe_b64encode(json.dumps(changed).encode()).rstrip(b"=").decode()
        signed = f"{header}.{payload}.{signature}"
    return signed


_UNKNOWN_KEYS: list = []


def _unknown_key():
    """A signing key no JWKS holds (made once: RSA key generation is slow)."""
    if not _UNKNOWN_KEYS:
        _UNKNOWN_KEYS.append(new_key())
    return _UNKNOWN_KEYS[0]


# -- userinfo ----------------------------------------------------------------------------------


def userinfo(sim, realm):
    if realm != sim.realm:
        return jsonify({"error": "Realm does not exist"}), 404
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    with sim.lock:
        username = sim.access_tokens.get(bearer) if scheme.lower() == "bearer" else None
        user = sim.users.get(username or "")
        if user is None:
            return Response(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return jsonify(
            {
                "sub": user["sub"],
                "preferred_username": user["username"],
                "email": user["email"],
                "email_verified": True,
                "name": user["name"],
                "groups": list(user["groups"]),
            }
        )


def logout(sim, realm):
    target = request.args.get("post_logout_redirect_uri")
    if target and (urlsplit(target).hostname in LOOPBACK_HOSTS):
        return redirect(target, code=302)
    return _page("Signed out", "<p>You are signed out of the simulator.</p>")


ROUTES = (
    ("GET", "/realms/<realm>/.well-known/openid-configuration", "discovery", discovery),
    ("GET", f"{PROTOCOL}/auth", "authorize", authorize),
    ("POST", f"{PROTOCOL}/auth", "authorize_login", authorize),
    ("POST", f"{PROTOCOL}/token", "token", token),
    ("GET", f"{PROTOCOL}/certs", "jwks", jwks),
    ("GET", f"{PROTOCOL}/userinfo", "userinfo", userinfo),
    ("POST", f"{PROTOCOL}/userinfo", "userinfo_post", userinfo),
    ("GET", f"{PROTOCOL}/logout", "logout", logout),
)


def register(sim, app: Flask) -> None:
    for method, rule, operation_id, view in ROUTES:
        app.add_url_rule(
            rule, endpoint=operation_id, view_func=sim.operation(operation_id)(bind(view, sim)), methods=[method]
        )
