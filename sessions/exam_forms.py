"""Forms of the exam pages (SPEC §8): the new-exam form with its roster, and the bulk extend's minutes.

The roster arrives pasted into a textarea or as an uploaded CSV file (header `owner[,reservation_id]`);
an uploaded file's text is put back into the textarea, so a page with errors always shows the roster it
read. `sessions.exams.parse_roster` reads it and names each bad row; `exam_book` decides the rest
(owners, unique reservation ids, capacity) and books all or nothing.
"""

import re

from django import forms
from django.core.exceptions import ValidationError

from lcm.forms import add_service_errors
from sessions.exams import exam_book, parse_roster
from sessions.forms import datetime_input
from sessions.models import LabletDefinition
from sessions.states import DefinitionStatus

MAX_ROSTER_BYTES = 1_000_000
_ROW_KEY = re.compile(r"^candidates\[(\d+)\](?:\.(\w+))?$")


def row_error(key: str, message: str) -> tuple[int | None, str]:
    """`("candidates[3].owner", "is required")` → `(4, "Row 4, owner: is required")`: the 1-based row a person
    counts, unless the service's message already names it. Other keys come back with no row."""
    match = _ROW_KEY.match(key)
    if not match:  # the roster as a whole ("roster": "has 1001 rows; …", "candidates": "at least one …")
        return None, f"The roster {message}" if key == "roster" else message[:1].upper() + message[1:]
    row = int(match.group(1)) + 1
    if re.match(rf"^row {row}\b", message, re.IGNORECASE):
        return row, message[:1].upper() + message[1:]
    field = f", {match.group(2)}" if match.group(2) else ""
    return row, f"Row {row}{field}: {message}"


class ExamForm(forms.Form):
    """A new exam: name, definition, timeslot, notes and the roster (pasted or uploaded)."""

    name = forms.CharField(max_length=200, label="Exam name")
    definition = forms.ModelChoiceField(
        queryset=LabletDefinition.objects.none(), empty_label="Choose a definition…", label="Definition"
    )
    timeslot_start = forms.DateTimeField(label="Start (UTC)", widget=datetime_input())
    timeslot_end = forms.DateTimeField(label="End (UTC)", widget=datetime_input())
    notes = forms.CharField(required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 2}), label="Notes")
    roster = forms.CharField(
        required=False,
        max_length=MAX_ROSTER_BYTES,
        strip=False,
        label="Roster",
        help_text="One candidate per line: owner[,reservation_id]; a first line “owner,reservation_id” is a header.",
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false", "class": "mono"}),
    )
    roster_file = forms.FileField(required=False, label="…or a CSV file", help_text="Header owner[,reservation_id].")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.candidates: list[dict] = []
        self.row_errors: list[tuple[int | None, str]] = []
        self.fields["definition"].queryset = LabletDefinition.objects.filter(status=DefinitionStatus.ACTIVE).order_by(
            "name", "-created_at"
        )

    def clean(self):
        data = super().clean()
        start, end = data.get("timeslot_start"), data.get("timeslot_end")
        if start and end and end <= start:
            self.add_error("timeslot_end", "The end must be after the start.")
        text = self._roster_text(data)
        if text is None:
            return data
        if not text.strip():
            self.add_error("roster", "Paste the roster or choose a CSV file.")
            return data
        rows, errors = parse_roster(text)
        for key, messages in errors.items():
            for message in messages:
                self._add_row_error(key, message)
        self.candidates = rows
        return data

    def _roster_text(self, data) -> str | None:
        """The roster's text: the uploaded file's (shown back in the textarea) or the pasted one; None on error."""
        upload = data.get("roster_file")
        if not upload:
            return data.get("roster", "")
        if upload.size > MAX_ROSTER_BYTES:
            self.add_error("roster_file", f"The file is larger than {MAX_ROSTER_BYTES // 1_000_000} MB.")
            return None
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            self.add_error("roster_file", "The file is not UTF-8 text (save it as CSV UTF-8).")
            return None
        self.data = self.data.copy()
        self.data["roster"] = text
        data["roster"] = text
        return text

    def _add_row_error(self, key: str, message: str) -> None:
        row, text = row_error(key, message)
        self.row_errors.append((row, text))
        self.add_error("roster", text)

    @property
    def bad_rows(self) -> list[int]:
        """The roster rows (1-based) with at least one error."""
        return sorted({row for row, _ in self.row_errors if row is not None})

    @property
    def count(self) -> int:
        return len(self.candidates)

    def submit(self, *, actor):
        """Book the exam through `exam_book` under the admission policy; returns the booking, or None with the
        errors on the form (per-row errors under the roster). `CapacityRefused` is left to the view."""
        data = self.cleaned_data
        try:
            return exam_book(
                name=data["name"],
                definition=data["definition"],
                timeslot_start=data["timeslot_start"],
                timeslot_end=data["timeslot_end"],
                candidates=self.candidates,
                actor=actor,
                notes=data.get("notes", ""),
            )
        except ValidationError as exc:
            self._add_service_errors(exc)
        return None

    def _add_service_errors(self, exc: ValidationError) -> None:
        if not hasattr(exc, "error_dict"):
            add_service_errors(self, exc)
            return
        rows = {k: v for k, v in exc.error_dict.items() if k.startswith("candidates")}
        for key, errors in rows.items():
            for error in errors:
                self._add_row_error(key, error.message % error.params if error.params else error.message)
        rest = {k: v for k, v in exc.error_dict.items() if k not in rows}
        if rest:
            add_service_errors(self, ValidationError(rest), {"definition_id": "definition"})


class BulkExtendForm(forms.Form):
    """The bulk +5/+10/+15 minutes with a reason (SPEC §3.4a): the same quick choices as a session page."""

    QUICK_MINUTES = (5, 10, 15)

    minutes = forms.TypedChoiceField(choices=[(m, f"+{m} min") for m in QUICK_MINUTES], coerce=int)
    reason = forms.CharField(required=False, max_length=500, label="Reason")
