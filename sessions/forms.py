"""Forms of the session and definition pages.

Forms check the shape of the input (types, required fields); the services decide what is
allowed. `submit()` calls the service and turns its ValidationError into field errors, so
a page always shows the user's input back with the message next to the field.
"""

from datetime import timedelta

from django import forms
from django.core.exceptions import ValidationError

from lcm.errors import Conflict
from lcm.forms import add_service_errors
from lcm.pages import ListOptions, status_rank
from sessions.booking import session_create, session_extend
from sessions.definitions import definition_create
from sessions.models import LabletDefinition
from sessions.states import DefinitionStatus, GradingMode, SessionStatus
from workers.states import LicenseType

# 24-h ISO date-time, whatever the browser's locale (a datetime-local picker follows it: 12-h in en-US).
DATETIME_TEXT = "%Y-%m-%d %H:%M"
DATETIME_PATTERN = r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?"


def datetime_input(**attrs):
    """A 24-h ISO date-time field ("2026-12-05 14:30", a "T" is accepted too); the forms read UTC."""
    return forms.DateTimeInput(
        attrs={
            "type": "text",
            "pattern": DATETIME_PATTERN,
            "placeholder": "YYYY-MM-DD HH:MM",
            "title": "24-h date and time in UTC: YYYY-MM-DD HH:MM",
            "autocomplete": "off",
            "spellcheck": "false",
            "data-utc-input": "",
            **attrs,
        },
        format=DATETIME_TEXT,
    )


class SessionCreateForm(forms.Form):
    """The "New session" form: definition, owner, ASAP or a timeslot, and an optional reservation id."""

    ASAP, AT = "asap", "at"

    definition = forms.ModelChoiceField(
        queryset=LabletDefinition.objects.none(), empty_label="Choose a definition…", label="Definition"
    )
    owner = forms.CharField(max_length=200, label="Owner", help_text="The candidate's id.")
    when = forms.ChoiceField(
        choices=[(ASAP, "As soon as possible"), (AT, "At a set time")],
        initial=ASAP,
        widget=forms.RadioSelect,
        label="Start",
    )
    timeslot_start = forms.DateTimeField(required=False, label="Start (UTC)", widget=datetime_input())
    timeslot_end = forms.DateTimeField(
        required=False,
        label="End (UTC)",
        widget=datetime_input(),
        help_text="Empty = start + the definition's maximum duration.",
    )
    reservation_id = forms.CharField(max_length=200, required=False, label="Reservation id")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conflict_id = None
        self.fields["definition"].queryset = LabletDefinition.objects.filter(status=DefinitionStatus.ACTIVE).order_by(
            "name", "-created_at"
        )

    def clean(self):
        data = super().clean()
        if data.get("when") == self.AT and not data.get("timeslot_start") and "timeslot_start" not in self.errors:
            self.add_error("timeslot_start", "Give a start time, or choose “As soon as possible”.")
        return data

    def submit(self, *, actor):
        """Book the session through `session_create`; returns it, or None with the errors on the form."""
        data = self.cleaned_data
        try:
            return session_create(
                definition=data["definition"],
                owner=data["owner"],
                timeslot_start=data["timeslot_start"] if data["when"] == self.AT else None,
                timeslot_end=data["timeslot_end"],
                reservation_id=data["reservation_id"] or None,
                actor=actor,
                reason="booked from the sessions page",
            )
        except ValidationError as exc:
            add_service_errors(self, exc, {"definition_id": "definition"})
        except Conflict as exc:
            self.conflict_id = exc.existing_id
            self.add_error(exc.field if exc.field in self.fields else None, exc.detail)
        return None


class ExtendForm(forms.Form):
    """Move a session's timeslot end later: to a chosen end, or by a quick +5/+10/+15 minutes (SPEC §3.4a)."""

    QUICK_MINUTES = (5, 10, 15)

    timeslot_end = forms.DateTimeField(label="New end (UTC)", widget=datetime_input(), required=False)
    add_minutes = forms.TypedChoiceField(
        choices=[(m, f"+{m} min") for m in QUICK_MINUTES], coerce=int, required=False, empty_value=None
    )
    reason = forms.CharField(
        label="Reason", required=False, max_length=500, help_text="Needed to extend beyond the instructors' limit."
    )

    def clean(self):
        data = super().clean()
        if not self.errors and data.get("add_minutes") is None and data.get("timeslot_end") is None:
            self.add_error("timeslot_end", "Choose a new end, or add minutes with a + button.")
        return data

    def submit(self, session, *, actor, is_admin: bool):
        """Extend through `session_extend`; returns the session, or None with the errors on the form."""
        data = self.cleaned_data
        minutes = data.get("add_minutes")
        try:
            new_end = session.timeslot_end + timedelta(minutes=minutes) if minutes else data["timeslot_end"]
        except OverflowError:
            self.add_error("add_minutes", "The session already ends as late as a date can be.")
            return None
        try:
            return session_extend(session, new_end, actor=actor, is_admin=is_admin, reason=data.get("reason", ""))
        except ValidationError as exc:
            add_service_errors(self, exc)
        return None


class ManualScoreForm(forms.Form):
    """The optional manual score that may come with "Complete Grading" (SPEC §3.4)."""

    score = forms.DecimalField(required=False, min_value=0, max_digits=10, decimal_places=2)
    max_score = forms.DecimalField(required=False, min_value=0, max_digits=10, decimal_places=2)
    cut_score = forms.DecimalField(required=False, min_value=0, max_digits=10, decimal_places=2)

    def clean(self):
        data = super().clean()
        given = [name for name in ("score", "max_score", "cut_score") if data.get(name) is not None]
        if given and len(given) != 3 and not self.errors:
            raise ValidationError("A manual score needs score, maximum and cut score, or none of them.")
        return data

    @property
    def has_score(self) -> bool:
        return self.cleaned_data.get("score") is not None


class DefinitionCreateForm(forms.Form):
    """Upload a lablet definition: the CML topology plus what it needs from a worker (SPEC §2.1)."""

    name = forms.CharField(max_length=200)
    version = forms.CharField(max_length=50, initial="1.0.0", help_text="Semantic version, e.g. 1.0.0.")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    lab_file = forms.FileField(required=False, label="Lab YAML file", help_text="Or paste the YAML below.")
    lab_yaml = forms.CharField(
        required=False, label="Lab YAML", widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false"})
    )
    lab_artifact_uri = forms.CharField(required=False, max_length=500, label="Artifact URI")
    cpu_cores = forms.IntegerField(min_value=1, max_value=10_000, initial=1, label="CPU cores")
    memory_gb = forms.IntegerField(min_value=1, max_value=10_000, initial=1, label="Memory (GB)")
    storage_gb = forms.IntegerField(min_value=1, max_value=10_000, initial=1, label="Storage (GB)")
    license_affinity = forms.MultipleChoiceField(
        required=False,
        choices=LicenseType.choices,
        widget=forms.CheckboxSelectMultiple,
        label="Licences",
        help_text="None ticked = any licence.",
    )
    cml_version_min = forms.CharField(required=False, max_length=20, label="CML version min")
    cml_version_max = forms.CharField(required=False, max_length=20, label="CML version max")
    max_duration_minutes = forms.IntegerField(
        min_value=1, max_value=7 * 24 * 60, initial=60, label="Max duration (min)"
    )
    boot_lead_minutes = forms.IntegerField(
        required=False, min_value=0, max_value=24 * 60, label="Boot lead (min)", help_text="Empty = global setting."
    )
    form_qualified_name = forms.CharField(
        required=False, max_length=300, label="Form qualified name",
        help_text="The content id LDS and the Grading Engine know this lab by (e.g. Exam-CCNA-Lab-1.2); "
        "the candidate's LDS session and the grading use it. Required when grading is on.",
    )  # fmt: skip
    grading_mode = forms.ChoiceField(
        choices=[
            (GradingMode.NONE, "None: no grading"),
            (GradingMode.AUTO, "Auto: graded when the candidate finishes"),
            (GradingMode.MANUAL, "Manual: an instructor starts or skips grading"),
        ],
        initial=GradingMode.NONE,
        required=False,
        label="Grading",
    )
    pass_percent = forms.IntegerField(
        required=False, min_value=0, max_value=100, label="Pass mark (%)", help_text="Empty = the system default."
    )
    hold_for_review_hours = forms.IntegerField(
        required=False, min_value=0, max_value=24 * 30, initial=0, label="Hold for review (h)",
        help_text="Keep the stopped lab this long after grading; 0 = wipe at once.",
    )  # fmt: skip
    lab_reuse_enabled = forms.BooleanField(required=False, initial=True, label="Reuse wiped labs")
    status = forms.ChoiceField(
        choices=[(DefinitionStatus.ACTIVE, "Active"), (DefinitionStatus.INACTIVE, "Inactive")],
        initial=DefinitionStatus.ACTIVE,
    )

    def clean(self):
        data = super().clean()
        upload = data.get("lab_file")
        if upload:
            if upload.size > 2_000_000:
                self.add_error("lab_file", "The file is larger than 2 MB.")
            else:
                try:
                    data["lab_yaml"] = upload.read().decode("utf-8")
                except UnicodeDecodeError:
                    self.add_error("lab_file", "The file is not UTF-8 text.")
                else:
                    # Shown again in the textarea if another field is refused: nobody has to upload it twice.
                    self.data = self.data.copy()
                    self.data["lab_yaml"] = data["lab_yaml"]
        elif not data.get("lab_yaml", "").strip() and "lab_yaml" not in self.errors:
            self.add_error("lab_yaml", "Paste the lab YAML or choose a file.")
        return data

    # What "New version from this" copies from a definition into a new form.
    COPIED = (
        "name", "description", "lab_yaml", "lab_artifact_uri", "cpu_cores", "memory_gb", "storage_gb",
        "license_affinity", "cml_version_min", "cml_version_max", "max_duration_minutes", "boot_lead_minutes",
        "form_qualified_name", "grading_mode", "pass_percent", "hold_for_review_hours", "lab_reuse_enabled",
    )  # fmt: skip

    @classmethod
    def initial_from(cls, definition) -> dict:
        """The form's initial values for a new version of `definition`: everything but the version."""
        return {name: getattr(definition, name) for name in cls.COPIED} | {"version": ""}

    def submit(self, *, actor):
        """Create the definition through `definition_create`; returns it, or None with the errors on the form."""
        data = {k: v for k, v in self.cleaned_data.items() if k not in ("lab_file", "status")}
        try:
            return definition_create(actor=actor, status=self.cleaned_data["status"], **data)
        except ValidationError as exc:
            add_service_errors(self, exc, {"resource_requirements": "cpu_cores"})
        return None


class SessionListOptions(ListOptions):
    """The session list's sort keys (`lcm.pages.ListOptions`): statuses sort in lifecycle order (PENDING
    first), not alphabetically."""

    SORT_KEYS = {"timeslot": "timeslot_start", "status": "status_rank", "owner": "owner", "created": "created_at"}
    LABELS = {"owner": "Owner", "status": "Status", "timeslot": "Timeslot", "created": "Booked"}
    DEFAULT_SORT = "-timeslot"

    def annotate(self, rows):
        return rows.annotate(status_rank=status_rank(SessionStatus.values)) if self.key == "status" else rows
