"""Forms of the worker pages."""

import secrets

from django import forms
from django.core.exceptions import ValidationError

from lcm.forms import add_service_errors
from workers.models import WorkerTemplate
from workers.services import worker_create


class WorkerCreateForm(forms.Form):
    """A new worker from a template (admin); the worker reconciler launches it."""

    template = forms.ModelChoiceField(
        queryset=WorkerTemplate.objects.none(), empty_label="Choose a template…", label="Template"
    )
    name = forms.CharField(
        max_length=100, required=False, label="Name", help_text="Empty = the template's name and a random suffix."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].queryset = WorkerTemplate.objects.filter(enabled=True).order_by("cost_per_hour", "name")

    def submit(self, *, actor):
        """Create the worker through `worker_create`; returns it, or None with the errors on the form."""
        template = self.cleaned_data["template"]
        name = self.cleaned_data["name"].strip() or f"{template.name}-{secrets.token_hex(3)}"
        try:
            return worker_create(name=name, template=template, actor=actor, reason="created from the workers page")
        except ValidationError as exc:
            add_service_errors(self, exc)
        return None
