"""The global search (`/search/?q=`): the top bar's search box finds sessions (owner, reservation id, the
start of the session id), workers (name, EC2 instance id, region, address), definitions (name, version,
form name, description) and exams (name, notes) through each list page's own `q` filter, so a group's count
is what its "see all" link (the list page with the same `?q=`) lists. Each group shows at most `PER_GROUP`
rows. Two queries per group (the rows and the count), however many rows match."""

from dataclasses import dataclass

from django import forms
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode

from lcm.filters import SEARCH_MAX_LENGTH
from lcm.pages import clean_params, instructor_required, page_context
from sessions.filters import DefinitionFilterSet, ExamFilterSet, SessionFilterSet
from sessions.models import Exam, LabletDefinition, LabletSession
from workers.filters import WorkerFilterSet
from workers.models import CMLWorker

PER_GROUP = 10


class SearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=SEARCH_MAX_LENGTH, strip=True, label="Search")


@dataclass
class Group:
    """One kind of result: its heading, the rows shown, how many match in all and the list page for all."""

    key: str
    title: str
    rows: list
    count: int
    see_all: str

    @property
    def more(self) -> bool:
        return self.count > len(self.rows)


def _group(key: str, title: str, filterset, list_url: str) -> Group:
    """The first rows (in the list page's default order) and the count of what `filterset` matches."""
    rows = filterset.qs
    text = filterset.data["q"]
    shown = list(rows[:PER_GROUP])
    return Group(key, title, shown, rows.order_by().count(), f"{reverse(list_url)}?{urlencode({'q': text})}")


def search_groups(text: str) -> list[Group]:
    """The results of `text` per kind, in a constant number of queries."""
    data = {"q": text}
    sessions = LabletSession.objects.select_related("definition").order_by("-timeslot_start", "-created_at", "-id")
    workers = CMLWorker.objects.order_by("name", "id")
    definitions = LabletDefinition.objects.order_by("name", "created_at", "id")
    exams = Exam.objects.select_related("definition").order_by("-timeslot_start", "-id")
    return [
        _group("sessions", "Sessions", SessionFilterSet(data, queryset=sessions), "sessions:session_list"),
        _group("workers", "Workers", WorkerFilterSet(data, queryset=workers), "workers:worker_list"),
        _group(
            "definitions", "Definitions", DefinitionFilterSet(data, queryset=definitions), "sessions:definition_list"
        ),
        _group("exams", "Exams", ExamFilterSet(data, queryset=exams), "sessions:exam_list"),
    ]


@instructor_required
def search(request):
    """Results grouped by kind; an empty or blank query shows a hint, an overlong one a form error."""
    form = SearchForm(clean_params(request.GET))
    text = form.cleaned_data["q"] if form.is_valid() else ""
    groups = search_groups(text) if text else []
    context = page_context(
        request,
        "search",
        form=form,
        text=text,
        groups=groups,
        found=sum(g.count for g in groups),
        per_group=PER_GROUP,
    )
    return render(request, "sessions/search.html", context)
