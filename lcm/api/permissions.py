"""REST permissions by role (SPEC §5.1, `lcm.roles`) and the internal API key check."""

import hmac

from django.conf import settings
from rest_framework.permissions import BasePermission

from lcm.roles import is_admin, is_instructor


def internal_key_valid(supplied: str) -> bool:
    """Whether `supplied` is the internal API key, compared in constant time (an empty key never matches)."""
    expected = settings.INTERNAL_API_KEY
    if not expected or not isinstance(supplied, str):
        return False
    return hmac.compare_digest(supplied.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


class IsInstructor(BasePermission):
    """Instructors (and admins): book, watch and drive sessions, read reports, fleet and definitions."""

    message = "This needs the instructor or admin role."

    def has_permission(self, request, view):
        return is_instructor(request.user)


class IsAdmin(BasePermission):
    """Admins only: workers, templates, definitions and settings."""

    message = "This needs the admin role."

    def has_permission(self, request, view):
        return is_admin(request.user)


class InternalApiKey(BasePermission):
    """The request carried the right `X-API-Key` (checked by `InternalApiKeyAuthentication`)."""

    message = "This needs the internal API key."

    def has_permission(self, request, view):
        from lcm.api.authentication import INTERNAL_HEADER, InternalCaller

        return isinstance(request.user, InternalCaller) and request.auth == INTERNAL_HEADER
