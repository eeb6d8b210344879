"""Building blocks shared by every app's admin (SPEC §5.5).

The admin is a window on the raw data, not a second way to change it: statuses are
read-only, status changes are admin actions that call the services, and forms that
create or edit something a service owns are saved by that service. This module holds
the pieces that make that cheap to do everywhere:

- `ReadOnlyAdmin` / `ReadOnlyInline`: view-only admins and inlines (history, reports, ports).
- `ActionsOnlyAdmin`: objects are read-only on their page but the changelist still offers actions.
- `service_action`: an admin action that runs a service per selected object, turns refusals
  into warning messages (never a 500) and reports how many succeeded; with `confirm=` it first shows
  an intermediate page listing the selected objects (destructive and candidate-affecting actions).
- `ServiceModelForm`: a ModelForm saved by a service; the service's validation runs once as a
  dry run while the form is cleaned, so its errors appear on the form's fields.
"""

from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import models, transaction
from django.template.response import TemplateResponse
from django_fsm import ConcurrentTransition

from lcm.errors import Conflict, first_error_line
from lcm.fsm import InvalidTransition

# What a service raises when it refuses a request; anything else is a bug and should surface.
SERVICE_ERRORS = (InvalidTransition, ValidationError, Conflict, ConcurrentTransition, ObjectDoesNotExist)

# Per-object refusals listed individually before they are summarised (keeps the page readable).
MAX_LISTED_FAILURES = 10

# The actor recorded while a service runs as a validation dry run (always rolled back).
VALIDATION_ACTOR = "admin form validation"


class ReadOnlyAdmin(admin.ModelAdmin):
    """A view-only admin: rows are written by services only (history, reports, ports)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ActionsOnlyAdmin(admin.ModelAdmin):
    """Objects are read-only on their change page; the changelist keeps its service-backed actions.

    Django asks `has_change_permission(request)` without an object when it decides which
    actions to offer, and with the object when it renders or saves the change page.
    """

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    """A read-only table of child rows on the parent's page (no add, change or delete)."""

    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def run_service_action(modeladmin, request, queryset, call: Callable, label: str) -> int:
    """Run `call(obj, request)` for each selected object; report refusals and the success count.

    Each object is changed by its own service call (own lock, own transaction), so one
    refusal does not undo the others. Returns how many succeeded.
    """
    succeeded, failures = 0, []
    objects = list(queryset)
    for obj in objects:
        try:
            call(obj, request)
        except SERVICE_ERRORS as exc:
            failures.append(f"{obj}: {first_error_line(exc)}")
        else:
            succeeded += 1
    for line in failures[:MAX_LISTED_FAILURES]:
        modeladmin.message_user(request, f"{label} refused for {line}", level=messages.WARNING)
    if len(failures) > MAX_LISTED_FAILURES:
        modeladmin.message_user(
            request, f"{label} refused for {len(failures) - MAX_LISTED_FAILURES} more", level=messages.WARNING
        )
    noun = modeladmin.model._meta.verbose_name if len(objects) == 1 else modeladmin.model._meta.verbose_name_plural
    modeladmin.message_user(
        request,
        f"{label}: {succeeded} of {len(objects)} {noun} succeeded.",
        level=messages.SUCCESS if not failures else messages.WARNING,
    )
    return succeeded


def service_action(name: str, label: str, call: Callable, *, confirm: str = ""):
    """An admin action named `name` (shown as `label`) that runs `call(obj, request)` per selected object.

    `confirm` (what the action does to each object, e.g. "Their labs are torn down …") makes it ask first, like
    Django's "Delete selected": an intermediate page lists the selected objects and only its "Yes" (a post with
    `post=yes`) runs the action. Actions that take nothing away (a test send, a retry) leave it empty."""

    def action(modeladmin, request, queryset):
        if confirm and request.POST.get("post") != "yes":
            return confirmation_page(modeladmin, request, queryset, name=name, label=label, consequence=confirm)
        run_service_action(modeladmin, request, queryset, call, label)
        return None

    action.__name__ = name
    action.__doc__ = f"Admin action: {label} (one service call per selected object)."
    return admin.action(description=label, permissions=["change"])(action)


def confirmation_page(modeladmin, request, queryset, *, name: str, label: str, consequence: str):
    """The intermediate page of an action that asks first: the selected objects and a "Yes" that runs it."""
    opts = modeladmin.model._meta
    count = queryset.count()
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"{label}?",
        "opts": opts,
        "queryset": queryset,
        "count": count,
        "objects_name": opts.verbose_name if count == 1 else opts.verbose_name_plural,
        "label": label,
        "consequence": consequence,
        "action_name": name,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, "admin/lcm_action_confirm.html", context)


class _DryRun(Exception):
    """Raised inside the validation savepoint so that everything the service wrote rolls back."""


class ServiceModelForm(forms.ModelForm):
    """A ModelForm whose write is a service call (`call_service`), not `instance.save()`.

    While the form is cleaned, the service runs once inside a savepoint that is always
    rolled back (its `on_commit` hooks are discarded with it): every ValidationError or
    Conflict it raises becomes a form error. The admin's `save_model` then makes the real
    call (see `ServiceSaveMixin`).

    `validate_model = False` (add forms) leaves validation to the service alone, so a rule
    is not checked twice with two wordings; change forms keep model validation, which also
    copies the cleaned values onto `instance`.
    """

    validate_model = True
    # Service error keys that are spelt differently from the form field (`definition_id` → `definition`).
    service_error_fields: dict[str, str] = {}

    def call_service(self, actor):
        """Perform the write with `self.cleaned_data`; returns the saved object."""
        raise NotImplementedError

    def _post_clean(self):
        if self.validate_model:
            super()._post_clean()
        if not self.errors:
            self._validate_with_service()

    def _validate_with_service(self):
        try:
            with transaction.atomic():
                self.call_service(actor=VALIDATION_ACTOR)
                raise _DryRun
        except _DryRun:
            pass
        except ValidationError as exc:
            self.add_service_error(exc)
        except Conflict as exc:
            self._add_error_for(exc.field, [exc.detail])

    def add_service_error(self, exc: ValidationError) -> None:
        """Put a service's ValidationError on the matching fields (or on the form when none matches)."""
        if hasattr(exc, "error_dict"):
            for key, errors in exc.error_dict.items():
                self._add_error_for(key, [message for error in errors for message in error.messages])
        else:
            self.add_error(None, exc.messages)

    def _add_error_for(self, key: str | None, messages_: list[str]) -> None:
        name = self.service_error_fields.get(key, key) if key else None
        if name and name not in self.fields and "." in name:
            name = name.rsplit(".", 1)[1]  # `template.cpu_cores` → `cpu_cores`
        if name in self.fields:
            self.add_error(name, messages_)
        else:
            self.add_error(None, [f"{key}: {m}" if key else m for m in messages_])


class ServiceSaveMixin:
    """ModelAdmin mixin: forms that are `ServiceModelForm`s are saved by their service."""

    # URLs without a scheme are read as https (Django 6's default, opted into now).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def save_model(self, request, obj, form, change):
        if not isinstance(form, ServiceModelForm):
            super().save_model(request, obj, form, change)
            return
        saved = form.call_service(actor=request.user)
        # The admin goes on using `obj` (log entry, message, redirect): make it the row the service wrote.
        vars(obj).update(vars(saved))


def model_field_names(model, *, exclude=()) -> tuple[str, ...]:
    """Names of the model's concrete fields in declaration order, minus `exclude`."""
    return tuple(f.name for f in model._meta.concrete_fields if f.name not in exclude)
