"""Error types shared by services and every interface (REST, pages, commands, admin)."""

from django.core.exceptions import ValidationError

from lcm.fsm import InvalidTransition

__all__ = ["Conflict", "InvalidTransition", "ValidationError", "first_error_line"]


class Conflict(Exception):
    """The request clashes with existing data (HTTP 409); `existing_id` names what it clashes with."""

    code = "conflict"
    # More members of the 409 body (e.g. `capacity`, the verdict of a refused booking).
    extra: dict = {}

    def __init__(self, detail: str, *, existing_id=None, field: str | None = None):
        self.detail = detail
        self.existing_id = str(existing_id) if existing_id is not None else None
        self.field = field
        super().__init__(detail)


def first_error_line(exc: Exception) -> str:
    """One readable line for a service error (used by commands and admin messages)."""
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            parts = [
                f"{name}: {'; '.join((e.message % e.params if e.params else e.message) for e in errs)}"
                for name, errs in exc.error_dict.items()
            ]
            return "; ".join(parts)
        return "; ".join(exc.messages)
    return str(exc)
