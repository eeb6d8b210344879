"""REST permissions by role (SPEC §5.1, `lcm.roles`) and the internal API key check."""

from rest_framework.permissions import BasePermission

from lcm.api.authentication import INTERNAL_HEADER, InternalCaller
from lcm.roles import is_admin, is_instructor


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
        return isinstance(request.user, InternalCaller) and request.auth == INTERNAL_HEADER
