"""Form helpers every app's pages share."""

from django import forms
from django.core.exceptions import ValidationError


def add_service_errors(form: forms.Form, exc: ValidationError, field_map: dict[str, str] | None = None) -> None:
    """Attach a service's ValidationError to the form: known fields get their message, the rest go on top."""
    field_map = field_map or {}
    if not hasattr(exc, "error_dict"):
        for message in exc.messages:
            form.add_error(None, message)
        return
    for name, errors in exc.error_dict.items():
        field = field_map.get(name, name)
        target = field if field in form.fields else None
        for error in errors:
            text = error.message % error.params if error.params else error.message
            # The services word messages to follow the field name ("is required"); on a
            # page the field's label is right there, so start with a capital letter.
            text = text[:1].upper() + text[1:]
            form.add_error(target, text if target else f"{name}: {text}")
