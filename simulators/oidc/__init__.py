"""The OpenID Connect provider simulator (Keycloak-compatible paths): `OIDCSimulator` in `app.py`."""

from simulators.oidc.app import OIDCSimulator

__all__ = ["OIDCSimulator"]
