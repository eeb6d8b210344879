"""OpenID Connect provider simulator (SPEC §12), on Keycloak's paths under `/realms/<realm>`: the identity
provider LCM's single sign-on is tested against.

    GET  /realms/<realm>/.well-known/openid-configuration  discovery
    GET  /realms/<realm>/protocol/openid-connect/auth        authorization code flow: a login form, or straight
                                                             back with a code for `login_hint=<known user>`
    POST /realms/<realm>/protocol/openid-connect/auth        the login form's answer
    POST /realms/<realm>/protocol/openid-connect/token       `authorization_code` grant: client secret (form or
                                                             Basic), the same `redirect_uri`, PKCE (S256 or plain)
    GET  /realms/<realm>/protocol/openid-connect/certs       JWKS (one RS256 key)
    GET  /realms/<realm>/protocol/openid-connect/userinfo    the bearer access token's user: sub, names, groups

ID tokens are RS256 JWTs with `iss`, `aud` (the client), `azp`, `sub`, `nonce`, `exp`, `iat`, `auth_time`,
`preferred_username`, `email`, `name` and `groups` (Keycloak's group mapper, names without the leading `/`).
A client needs PKCE unless registered with `"pkce": false`; its redirect URIs are any loopback URL unless
registered.

Control API, besides the common `/_sim/reset|faults|clock|requests|state`:
  GET    /_sim/users                  the users (no passwords)
  PUT    /_sim/users/<username>       {"password"?, "email"?, "name"?, "groups"?: [...]}: create or replace
  DELETE /_sim/users/<username>
  PUT    /_sim/clients/<client_id>    {"secret", "redirect_uris"?: [...] (null: any loopback), "pkce"?: true}
  PUT    /_sim/id-token               {"tamper": null | "signature" | "audience" | "issuer" | "expired" |
                                       "nonce" | "unknown_key" | "groups"}: how ID tokens are issued from now
                                       on (`signature`: the payload changed after signing; `unknown_key`: signed
                                       by a key the JWKS does not hold; `groups`: an admin group added unsigned)
"""

import uuid

from flask import Flask

from simulators.common import Simulator
from simulators.common_stateful import setting
from simulators.oidc import api, control
from simulators.oidc.control import public_user


def default_users() -> dict[str, dict]:
    """One user per role and one in no LCM group; each one's password is its name (a local stand-in)."""
    admin_group = setting("LCM_OIDC_ADMIN_GROUP", "LCM_OIDC_ADMIN_GROUP", "lcm-admins")
    instructor_group = setting("LCM_OIDC_INSTRUCTOR_GROUP", "LCM_OIDC_INSTRUCTOR_GROUP", "instructors")
    return {
        "sso-admin": {"groups": [admin_group], "name": "SSO Admin"},
        "sso-instructor": {"groups": [instructor_group], "name": "SSO Instructor"},
        "sso-visitor": {"groups": ["staff-everywhere-else"], "name": "SSO Visitor"},
    }


class OIDCSimulator(Simulator):
    """A Keycloak-like realm: users with groups, confidential clients, codes, RS256 tokens and a JWKS."""

    name = "oidc"

    def __init__(
        self,
        *,
        realm: str | None = None,
        users: dict[str, dict] | None = None,
        clients: dict[str, str | dict] | None = None,
        **options,
    ):
        """`users`: username -> {"password"?, "email"?, "name"?, "groups"?}; `clients`: client id -> secret or
        {"secret", "redirect_uris"?, "pkce"?}; `options`: `zero_delay`, `timings`, `seed`, `control_token`."""
        self.realm = realm or setting("LCM_OIDC_REALM", "LCM_OIDC_REALM", "lcm")
        if clients is None:
            client_id = setting("LCM_OIDC_CLIENT_ID", "LCM_OIDC_CLIENT_ID", "") or "lcm"
            clients = {
                client_id: setting("LCM_OIDC_CLIENT_SECRET", "LCM_OIDC_CLIENT_SECRET", "") or "local-oidc-secret"
            }
        self.initial_users = dict(users if users is not None else default_users())
        self.initial_clients = dict(clients)
        self.key = api.new_key()
        self.kid = uuid.uuid4().hex[:16]
        self.users: dict[str, dict] = {}
        self.clients: dict[str, dict] = {}
        self.codes: dict[str, dict] = {}
        self.access_tokens: dict[str, str] = {}
        self.tamper: str | None = None
        super().__init__(**options)
        self.reset_state()

    def default_timings(self) -> dict:
        # Lifetimes, not delays: zero-delay mode keeps them.
        return {"code_ttl": 60, "token_ttl": 300}

    def register_routes(self, app: Flask) -> None:
        api.register(self, app)
        control.register(self, app)

    def reset_state(self) -> None:
        with self.lock:
            self.users = {}
            for username, spec in self.initial_users.items():
                self.put_user(username, spec)
            self.clients = {}
            for client_id, spec in self.initial_clients.items():
                self.put_client(client_id, spec)
            self.codes = {}
            self.access_tokens = {}
            self.tamper = None

    def control_state(self) -> dict:
        return {
            "realm": self.realm,
            "users": {name: public_user(user) for name, user in self.users.items()},
            "clients": sorted(self.clients),
            "codes": len(self.codes),
            "access_tokens": len(self.access_tokens),
            "tamper": self.tamper,
        }

    def timing(self, name: str) -> float:
        return float(self.timings.get(name, 0.0))

    # -- users and clients -----------------------------------------------------------------

    def put_user(self, username: str, spec: dict) -> dict:
        previous = self.users.get(username) or {}
        user = {
            "username": username,
            "sub": previous.get("sub") or str(uuid.uuid5(uuid.NAMESPACE_URL, f"oidc-sim:{self.realm}:{username}")),
            "password": spec.get("password") or username,
            "email": spec.get("email") or f"{username}@example.com",
            "name": spec.get("name") or username,
            "groups": [str(group).lstrip("/") for group in spec.get("groups") or []],
        }
        self.users[username] = user
        return user

    def put_client(self, client_id: str, spec) -> dict:
        spec = {"secret": spec} if isinstance(spec, str) else dict(spec)
        client = {
            "client_id": client_id,
            "secret": str(spec.get("secret") or ""),
            "redirect_uris": spec.get("redirect_uris"),
            "pkce": bool(spec.get("pkce", True)),
        }
        self.clients[client_id] = client
        return client
