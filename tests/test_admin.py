"""The Django admin (SPEC §5.5): every model registered and browsable, statuses read-only,
status changes only through actions that call the services, service-backed add/edit forms."""

from datetime import timedelta
from itertools import count

import pytest
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from grading.models import EvidenceCollection, EvidenceItem, GradingSession, Regrade, ScoreReport, ScoreSection
from grading.services import grading_session_create, score_report_create
from lcm.events import status_changed
from lcm.models import LoopHeartbeat, ReceivedEvent
from sessions.booking import session_create
from sessions.exams import exam_book
from sessions.models import Exam, LabletDefinition, LabletSession, SessionStatusChange, UserSession
from sessions.services import session_transition, user_session_create
from tests.factories import DEMO_LAB, DefinitionFactory, SessionFactory, TemplateFactory, WorkerFactory
from workers.models import (
    CMLWorker,
    FleetSample,
    LabRecord,
    LicenseRequest,
    Port,
    ScaleDecision,
    SystemSettings,
    WorkerStatusChange,
    WorkerTemplate,
)
from workers.port_services import ports_allocate
from workers.services import lab_record_create, worker_create, worker_transition

APP_LABELS = ("lablets", "workers", "grading", "scheduling")
REGISTERED = sorted(
    (model for model in admin.site._registry if model._meta.app_label in APP_LABELS), key=lambda m: m._meta.label
)
MODEL_IDS = [model._meta.label for model in REGISTERED]
WITH_STATUS = [model for model in REGISTERED if any(f.name == "status" for f in model._meta.fields)]

_suffix = count(1)


def _url(model_or_obj, view: str, *args) -> str:
    opts = model_or_obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def _build_graph() -> dict:
    """One object of every registered model, created through the services where they exist."""
    n = next(_suffix)
    definition = DefinitionFactory()
    session = session_create(definition=definition, owner=f"candidate-{n}", actor="test", reservation_id=f"res-{n}")
    user_session = user_session_create(
        session,
        actor="test",
        lds_session_id=f"lds-{n}",
        login_url="https://lds.example.test/login/abc",
        devices=[{"label": "desktop", "protocol": "vnc", "host": "127.0.0.1", "port": 2001}],
    )
    grading = grading_session_create(session, actor="test", grading_session_id=f"grading-{n}")
    report = score_report_create(
        session,
        actor="test",
        score=80,
        max_score=100,
        cut_score=70,
        grading_session=grading,
        sections=[
            {"name": "Routing", "score": 40, "max_score": 50},
            {"name": "Security", "score": 40, "max_score": 50},
        ],
    )
    template = TemplateFactory()
    worker = worker_create(name=f"worker-admin-{n}", actor="test", template=template, status="RUNNING")
    record = lab_record_create(worker=worker, actor="test", definition=definition, cml_lab_id=f"lab-{n}", title="demo")
    ports_allocate(record, ["desktop_vnc", "router_serial"])
    exam = exam_book(
        name=f"exam-{n}", definition=definition, timeslot_start=None, timeslot_end=None,
        candidates=[{"owner": f"exam-candidate-{n}"}], actor="test",
    ).exam  # fmt: skip
    return {
        Exam: exam,
        LabletDefinition: definition,
        LabletSession: session,
        SessionStatusChange: session.history.first(),
        UserSession: user_session,
        GradingSession: grading,
        ScoreReport: report,
        ScoreSection: report.sections.first(),
        WorkerTemplate: template,
        CMLWorker: worker,
        WorkerStatusChange: worker.history.first(),
        LabRecord: record,
        Port: record.port_allocations.first(),
        SystemSettings: SystemSettings.load(),
        ScaleDecision: ScaleDecision.objects.create(action="LAUNCH", reason="test demand", template=template),
        FleetSample: FleetSample.objects.create(at=timezone.now(), workers=1, cpu_used=2, cpu_total=8),
        LicenseRequest: LicenseRequest.objects.create(worker=worker, action="REGISTER", token="secret-token-123"),
        LoopHeartbeat: LoopHeartbeat.objects.create(name=f"loop-{n}", last_tick_at=timezone.now()),
        ReceivedEvent: ReceivedEvent.objects.create(event_id=f"evt-{n}", event_type="io.lablet.lds.session.running.v1"),
        EvidenceCollection: EvidenceCollection.objects.create(lablet_session=session),
        EvidenceItem: EvidenceItem.objects.create(
            lablet_session=session, kind="lab_yaml", name="lab.yaml", object_key=f"sessions/{n}/lab", sha256="0" * 64
        ),
        Regrade: Regrade.objects.create(lablet_session=session, requested_by="test"),
    }


@pytest.fixture
def graph(db):
    return _build_graph()


def _messages(response) -> list[tuple[int, str]]:
    return [(m.level, m.message) for m in get_messages(response.wsgi_request)]


def _run_action(client, model, action: str, objects):
    """Run an admin action as a browser does: an action that asks first shows its intermediate page (the selected
    objects listed), then its "Yes" (`post=yes`) runs it."""
    data = {"action": action, "_selected_action": [str(o.pk) for o in objects]}
    response = client.post(_url(model, "changelist"), data)
    if response.status_code == 200 and "lcm-action-confirmation" in response.content.decode():
        for obj in objects:
            assert f'name="_selected_action" value="{obj.pk}"' in response.content.decode()
        response = client.post(_url(model, "changelist"), data | {"post": "yes"})
    assert response.status_code == 302, response.content[:2000]
    return _messages(response)


def _form_data(response) -> dict:
    """The POST data a browser would send back for the change page in `response` (form + inline formsets)."""
    data = {}

    def add(form):
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        add(inline.formset.management_form)
        for form in inline.formset.forms:
            add(form)
    return data


def _model_admin(model):
    return admin.site._registry[model]


def _request(user):
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


# ---------------------------------------------------------------------------------------
# Every model: registered, browsable, status read-only, no N+1
# ---------------------------------------------------------------------------------------


def test_every_model_of_the_domain_apps_is_registered():
    expected = {model for label in APP_LABELS for model in apps.get_app_config(label).get_models()}
    assert set(REGISTERED) == expected


@pytest.mark.django_db
@pytest.mark.parametrize("model", REGISTERED, ids=MODEL_IDS)
def test_changelist_and_search_render(admin_client, graph, model):
    assert admin_client.get(_url(model, "changelist")).status_code == 200
    assert admin_client.get(_url(model, "changelist"), {"q": "candidate-1 demo"}).status_code == 200
    # A full id pasted into search must not break the exact-id lookups (`id__exact` on UUIDs).
    assert admin_client.get(_url(model, "changelist"), {"q": str(graph[model].pk)}).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("model", REGISTERED, ids=MODEL_IDS)
def test_change_page_renders(admin_client, graph, model):
    response = admin_client.get(_url(model, "change", graph[model].pk))
    assert response.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("model", REGISTERED, ids=MODEL_IDS)
def test_add_page_renders_where_adding_is_allowed(admin_client, admin_user, graph, model):
    allowed = _model_admin(model).has_add_permission(_request(admin_user))
    response = admin_client.get(_url(model, "add"))
    assert response.status_code == (200 if allowed else 403)
    expected_addable = {LabletDefinition, LabletSession, WorkerTemplate, CMLWorker}  # settings exist already
    assert allowed == (model in expected_addable)


@pytest.mark.django_db
@pytest.mark.parametrize("model", WITH_STATUS, ids=[m._meta.label for m in WITH_STATUS])
def test_status_is_read_only_on_every_form(admin_user, graph, model):
    model_admin = _model_admin(model)
    request = _request(admin_user)
    assert "status" in model_admin.readonly_fields
    assert "status" in model_admin.get_readonly_fields(request, graph[model])
    form_class = model_admin.get_form(request, graph[model], change=True)
    assert "status" not in form_class.base_fields


@pytest.mark.django_db
@pytest.mark.parametrize("model", REGISTERED, ids=MODEL_IDS)
def test_changelist_queries_do_not_grow_with_rows(admin_client, graph, model):
    url = _url(model, "changelist")
    admin_client.get(url)  # warm up the session and content-type caches
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(url).status_code == 200
    _build_graph()
    _build_graph()
    with CaptureQueriesContext(connection) as more:
        assert admin_client.get(url).status_code == 200
    assert len(more) == len(few), [q["sql"] for q in more.captured_queries]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model",
    [
        SessionStatusChange,
        WorkerStatusChange,
        ScoreReport,
        ScoreSection,
        LabRecord,
        Port,
        ReceivedEvent,
        LoopHeartbeat,
        ScaleDecision,
        LicenseRequest,
    ],
    ids=str,
)
def test_read_only_models_refuse_writes(admin_client, admin_user, graph, model):
    model_admin = _model_admin(model)
    request = _request(admin_user)
    obj = graph[model]
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, obj)
    assert not model_admin.has_delete_permission(request, obj)
    assert model_admin.get_actions(request) == {}
    assert admin_client.post(_url(model, "change", obj.pk), {}).status_code == 403
    assert admin_client.post(_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403


@pytest.mark.django_db
def test_history_inlines_are_read_only(admin_client, graph):
    response = admin_client.get(_url(LabletSession, "change", graph[LabletSession].pk))
    history = next(i for i in response.context["inline_admin_formsets"] if i.opts.model is SessionStatusChange)
    assert not history.has_add_permission and not history.has_change_permission and not history.has_delete_permission
    assert b"booked" in response.content  # the history row's reason is shown

    response = admin_client.get(_url(CMLWorker, "change", graph[CMLWorker].pk))
    history = next(i for i in response.context["inline_admin_formsets"] if i.opts.model is WorkerStatusChange)
    assert not history.has_add_permission and not history.has_change_permission and not history.has_delete_permission


@pytest.mark.django_db
def test_nothing_is_deletable(admin_user, graph):
    request = _request(admin_user)
    for model in REGISTERED:
        assert not _model_admin(model).has_delete_permission(request, graph[model]), model


# ---------------------------------------------------------------------------------------
# Session actions
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_terminate_action_terminates_a_pending_session_and_writes_history(admin_client, graph):
    session = graph[LabletSession]
    before = session.history.count()

    result = _run_action(admin_client, LabletSession, "terminate_sessions", [session])

    session = LabletSession.objects.get(pk=session.pk)
    assert session.status == "TERMINATED"
    assert session.end_reason == "TERMINATED"
    last = session.history.order_by("at", "id").last()
    assert session.history.count() == before + 1
    assert (last.from_status, last.to_status, last.actor, last.reason) == (
        "PENDING",
        "TERMINATED",
        "admin",
        "admin action",
    )
    assert (messages.SUCCESS, "Terminate (→ TERMINATED): 1 of 1 lablet session succeeded.") in result


@pytest.mark.django_db
def test_refused_action_warns_and_changes_nothing(admin_client, graph):
    session = graph[LabletSession]
    before = list(session.history.values_list("id", flat=True))

    result = _run_action(admin_client, LabletSession, "start_sessions", [session])

    session = LabletSession.objects.get(pk=session.pk)
    assert session.status == "PENDING"
    assert session.started_at is None
    assert list(session.history.values_list("id", flat=True)) == before
    warnings = [text for level, text in result if level == messages.WARNING]
    assert any("cannot go from PENDING to RUNNING" in text for text in warnings), result
    assert any("0 of 1" in text for text in warnings), result


@pytest.mark.django_db
def test_action_reports_partial_success(admin_client, graph):
    done = SessionFactory(status="TERMINATED")
    result = _run_action(admin_client, LabletSession, "terminate_sessions", [graph[LabletSession], done])
    assert LabletSession.objects.get(pk=graph[LabletSession].pk).status == "TERMINATED"
    assert (messages.WARNING, "Terminate (→ TERMINATED): 1 of 2 lablet sessions succeeded.") in result
    assert any(level == messages.WARNING and "TERMINATED to TERMINATED" in text for level, text in result)


@pytest.mark.django_db
def test_requeue_action_moves_a_scheduled_session_back_to_pending(admin_client, graph):
    worker = WorkerFactory()
    session = session_transition(graph[LabletSession], "SCHEDULED", actor="test", worker=worker)

    _run_action(admin_client, LabletSession, "requeue_sessions", [session])

    session = LabletSession.objects.get(pk=session.pk)
    assert session.status == "PENDING"
    assert session.worker is None
    assert session.history.filter(from_status="SCHEDULED", to_status="PENDING", actor="admin").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("action", "source", "target"),
    [
        ("start_sessions", "READY", "RUNNING"),
        ("finish_sessions", "RUNNING", "COLLECTING"),
        ("start_grading", "COLLECTING", "GRADING"),
        ("stop_sessions", "GRADING", "STOPPING"),
        ("archive_sessions", "STOPPED", "ARCHIVED"),
    ],
)
def test_manual_transition_actions(admin_client, action, source, target):
    session = SessionFactory(status=source)

    result = _run_action(admin_client, LabletSession, action, [session])

    session = LabletSession.objects.get(pk=session.pk)
    assert session.status == target, result
    assert session.history.filter(from_status=source, to_status=target, reason="admin action").exists()
    if target == "RUNNING":
        assert session.started_at is not None
    if target == "GRADING":
        assert session.grading_sessions.count() == 1  # the GradingSession comes with the transition


@pytest.mark.django_db
def test_session_change_page_is_read_only(admin_client, graph):
    session = graph[LabletSession]
    response = admin_client.post(_url(LabletSession, "change", session.pk), {"owner": "someone-else"})
    assert response.status_code == 403
    assert LabletSession.objects.get(pk=session.pk).owner == session.owner


# ---------------------------------------------------------------------------------------
# Session add form (session_create)
# ---------------------------------------------------------------------------------------


def _session_form(definition, start=None, **extra):
    data = {"definition": str(definition.pk), "owner": "candidate-x", "reservation_id": ""}
    data |= {"timeslot_start_0": "", "timeslot_start_1": "", "timeslot_end_0": "", "timeslot_end_1": ""}
    if start is not None:
        data |= {"timeslot_start_0": start.strftime("%Y-%m-%d"), "timeslot_start_1": start.strftime("%H:%M:%S")}
    return data | extra


@pytest.mark.django_db
def test_add_session_books_it_through_the_service(admin_client):
    definition = DefinitionFactory()
    start = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)

    response = admin_client.post(_url(LabletSession, "add"), _session_form(definition, start, reservation_id="r-9"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    session = LabletSession.objects.get(reservation_id="r-9")
    assert (session.status, session.owner, session.created_by) == ("PENDING", "candidate-x", "admin")
    assert session.timeslot_start == start
    assert session.timeslot_end == start + timedelta(minutes=definition.max_duration_minutes)
    assert session.history.filter(to_status="PENDING", actor="admin").count() == 1
    assert response.url == _url(LabletSession, "changelist")


@pytest.mark.django_db
def test_add_session_with_a_past_timeslot_shows_the_error_and_creates_nothing(admin_client):
    definition = DefinitionFactory()
    start = timezone.now() - timedelta(days=1)

    response = admin_client.post(_url(LabletSession, "add"), _session_form(definition, start))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["timeslot_start"] == ["is in the past"]
    assert not LabletSession.objects.exists()
    assert not SessionStatusChange.objects.exists()  # the validation dry run left nothing behind


@pytest.mark.django_db
def test_add_session_with_a_booked_reservation_shows_the_conflict(admin_client, graph):
    session = graph[LabletSession]
    before = LabletSession.objects.count()

    response = admin_client.post(
        _url(LabletSession, "add"), _session_form(session.definition, reservation_id=session.reservation_id)
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["reservation_id"]
    assert str(session.pk) in errors[0]
    assert LabletSession.objects.count() == before


@pytest.mark.django_db
def test_add_session_offers_only_active_definitions(admin_client):
    active = DefinitionFactory()
    inactive = DefinitionFactory(status="INACTIVE")

    response = admin_client.post(_url(LabletSession, "add"), _session_form(inactive))

    assert response.status_code == 200
    assert "definition" in response.context["adminform"].form.errors
    choices = {str(value) for value, _label in response.context["adminform"].form.fields["definition"].choices}
    assert str(active.pk) in choices and str(inactive.pk) not in choices


# ---------------------------------------------------------------------------------------
# Definitions: add form (definition_create) and status actions
# ---------------------------------------------------------------------------------------


def _definition_form(**extra):
    data = {
        "name": "admin-lab",
        "version": "1.2.0",
        "description": "made in the admin",
        "lab_yaml": DEMO_LAB,
        "lab_artifact_uri": "",
        "cpu_cores": "2",
        "memory_gb": "4",
        "storage_gb": "10",
        "license_affinity": ["ENTERPRISE"],
        "cml_version_min": "2.9",
        "cml_version_max": "",
        "max_duration_minutes": "90",
        "boot_lead_minutes": "",
        "form_qualified_name": "",
        "grading_mode": "none",
        "pass_percent": "",
        "hold_for_review_hours": "0",
        "lab_reuse_enabled": "on",
    }
    return data | extra


@pytest.mark.django_db
def test_add_definition_publishes_it_through_the_service(admin_client):
    response = admin_client.post(_url(LabletDefinition, "add"), _definition_form())

    assert response.status_code == 302, response.context["adminform"].form.errors
    definition = LabletDefinition.objects.get(name="admin-lab", version="1.2.0")
    assert definition.status == "ACTIVE"
    assert definition.created_by == "admin"
    assert definition.node_count == 2 and definition.port_template  # derived from the YAML by the service
    assert len(definition.lab_yaml_hash) == 64 and definition.lab_yaml_hash != "0" * 64
    assert definition.license_affinity == ["ENTERPRISE"]
    assert definition.max_duration_minutes == 90


@pytest.mark.django_db
def test_add_definition_with_bad_yaml_shows_a_form_error_and_creates_nothing(admin_client):
    response = admin_client.post(_url(LabletDefinition, "add"), _definition_form(lab_yaml="nodes: [unclosed"))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "is not valid YAML" in errors["lab_yaml"][0]
    assert not LabletDefinition.objects.exists()


@pytest.mark.django_db
def test_add_definition_reports_every_bad_field(admin_client):
    data = _definition_form(version="one", cml_version_min="2.x", grading_mode="auto", form_qualified_name="")
    response = admin_client.post(_url(LabletDefinition, "add"), data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert {"version", "cml_version_min", "form_qualified_name"} <= set(errors)
    assert not LabletDefinition.objects.exists()


@pytest.mark.django_db
def test_add_definition_twice_is_refused_on_the_version(admin_client):
    assert admin_client.post(_url(LabletDefinition, "add"), _definition_form()).status_code == 302

    response = admin_client.post(_url(LabletDefinition, "add"), _definition_form())

    assert response.status_code == 200
    assert "already exists" in response.context["adminform"].form.errors["version"][0]
    assert LabletDefinition.objects.count() == 1


@pytest.mark.django_db
def test_definition_change_page_is_read_only(admin_client, graph):
    definition = graph[LabletDefinition]
    response = admin_client.get(_url(LabletDefinition, "change", definition.pk))
    assert response.context["adminform"].form.fields == {}
    assert admin_client.post(_url(LabletDefinition, "change", definition.pk), {"name": "x"}).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("action", "source", "target"),
    [
        ("deactivate_definitions", "ACTIVE", "INACTIVE"),
        ("activate_definitions", "INACTIVE", "ACTIVE"),
        ("deprecate_definitions", "ACTIVE", "DEPRECATED"),
        ("archive_definitions", "DEPRECATED", "ARCHIVED"),
    ],
)
def test_definition_status_actions(admin_client, action, source, target):
    definition = DefinitionFactory(status=source)
    result = _run_action(admin_client, LabletDefinition, action, [definition])
    assert LabletDefinition.objects.get(pk=definition.pk).status == target
    assert result[-1][0] == messages.SUCCESS


@pytest.mark.django_db
def test_archived_definition_refuses_activation(admin_client):
    definition = DefinitionFactory(status="ARCHIVED")
    result = _run_action(admin_client, LabletDefinition, "activate_definitions", [definition])
    assert LabletDefinition.objects.get(pk=definition.pk).status == "ARCHIVED"
    assert any(level == messages.WARNING and "ARCHIVED to ACTIVE" in text for level, text in result)


# ---------------------------------------------------------------------------------------
# Workers: actions, add form (worker_create), capacity edits
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_set_desired_action_records_the_wish_and_history(admin_client, graph):
    worker = graph[CMLWorker]

    _run_action(admin_client, CMLWorker, "set_desired_stopped", [worker])

    worker = CMLWorker.objects.get(pk=worker.pk)
    assert (worker.status, worker.desired_status) == ("RUNNING", "STOPPED")
    assert worker.history.filter(field="desired_status", from_status="RUNNING", to_status="STOPPED").exists()

    _run_action(admin_client, CMLWorker, "set_desired_terminated", [worker])
    _run_action(admin_client, CMLWorker, "set_desired_running", [worker])
    assert CMLWorker.objects.get(pk=worker.pk).desired_status == "RUNNING"


@pytest.mark.django_db
def test_drain_and_cancel_drain_actions(admin_client, graph):
    worker = graph[CMLWorker]
    SystemSettings.objects.filter(pk=1).update(drain_timeout_minutes=45)

    _run_action(admin_client, CMLWorker, "drain_workers", [worker])

    worker = CMLWorker.objects.get(pk=worker.pk)
    assert worker.status == "DRAINING"
    assert worker.drain_deadline - worker.drain_started_at == timedelta(minutes=45)

    _run_action(admin_client, CMLWorker, "cancel_drain", [worker])

    worker = CMLWorker.objects.get(pk=worker.pk)
    assert worker.status == "RUNNING"
    assert worker.drain_started_at is None and worker.drain_deadline is None
    assert list(worker.history.filter(field="status").values_list("to_status", flat=True)) == [
        "RUNNING",
        "DRAINING",
        "RUNNING",
    ]


@pytest.mark.django_db
def test_cancel_drain_is_refused_unless_draining(admin_client):
    provisioning = WorkerFactory(status="PROVISIONING")  # PROVISIONING → RUNNING is in the table, but no drain

    result = _run_action(admin_client, CMLWorker, "cancel_drain", [provisioning])

    assert CMLWorker.objects.get(pk=provisioning.pk).status == "PROVISIONING"
    assert any(level == messages.WARNING and "not DRAINING" in text for level, text in result)


@pytest.mark.django_db
def test_drain_is_refused_for_a_stopped_worker(admin_client):
    stopped = WorkerFactory(status="STOPPED")
    result = _run_action(admin_client, CMLWorker, "drain_workers", [stopped])
    assert CMLWorker.objects.get(pk=stopped.pk).status == "STOPPED"
    assert any(level == messages.WARNING and "STOPPED to DRAINING" in text for level, text in result)


@pytest.mark.django_db
def test_add_worker_goes_through_the_service_and_copies_the_template(admin_client):
    template = TemplateFactory(cpu_cores=32, memory_gb=128, region="eu-west-1")
    data = {"name": "worker-new", "template": str(template.pk), "max_nodes": "12", "idle_detection_enabled": "on"}

    response = admin_client.post(_url(CMLWorker, "add"), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    worker = CMLWorker.objects.get(name="worker-new")
    assert (worker.status, worker.desired_status, worker.created_by) == ("PENDING", "RUNNING", "admin")
    assert (worker.cpu_cores, worker.memory_gb, worker.region) == (32, 128, "eu-west-1")  # from the template
    assert worker.max_nodes == 12  # given explicitly
    assert worker.history.filter(to_status="PENDING", actor="admin").exists()


@pytest.mark.django_db
def test_add_worker_with_a_taken_name_shows_the_error(admin_client, graph):
    response = admin_client.post(_url(CMLWorker, "add"), {"name": graph[CMLWorker].name})
    assert response.status_code == 200
    assert "already exists" in response.context["adminform"].form.errors["name"][0]
    assert CMLWorker.objects.count() == 1


@pytest.mark.django_db
def test_worker_capacity_is_editable_and_status_is_not(admin_client, graph):
    worker = graph[CMLWorker]
    url = _url(CMLWorker, "change", worker.pk)
    page = admin_client.get(url)
    assert set(page.context["adminform"].form.fields) == {
        "cpu_cores", "memory_gb", "storage_gb", "max_nodes", "port_range_start", "port_range_end",
        "idle_detection_enabled",
    }  # fmt: skip
    data = _form_data(page) | {"cpu_cores": "8", "status": "TERMINATED", "desired_status": "STOPPED"}

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    worker = CMLWorker.objects.get(pk=worker.pk)
    assert (worker.cpu_cores, worker.status, worker.desired_status) == (8, "RUNNING", "RUNNING")


@pytest.mark.django_db
def test_worker_port_range_must_be_ordered(admin_client, graph):
    url = _url(CMLWorker, "change", graph[CMLWorker].pk)
    data = _form_data(admin_client.get(url)) | {"port_range_start": "5000", "port_range_end": "4000"}
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert CMLWorker.objects.get(pk=graph[CMLWorker].pk).port_range_start == 2000


# ---------------------------------------------------------------------------------------
# Templates (template_update), child sessions, settings
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_template_edit_goes_through_template_update(admin_client, graph):
    template = graph[WorkerTemplate]
    url = _url(WorkerTemplate, "change", template.pk)
    page = admin_client.get(url)
    assert "name" not in page.context["adminform"].form.fields

    bad = admin_client.post(url, _form_data(page) | {"port_range_end": "70000"})
    assert bad.status_code == 200
    assert "65535" in bad.context["adminform"].form.errors["port_range_end"][0]

    good = admin_client.post(url, _form_data(page) | {"max_nodes": "99", "enabled": ""})
    assert good.status_code == 302, good.context["adminform"].form.errors
    template = WorkerTemplate.objects.get(pk=template.pk)
    assert (template.max_nodes, template.enabled) == (99, False)


@pytest.mark.django_db
def test_template_add_checks_the_port_range(admin_client):
    data = {
        "name": "tiny",
        "instance_type": "t3.large",
        "ami_name_pattern": "cml-*",
        "region": "us-east-1",
        "license_type": "PERSONAL",
        "cpu_cores": "2",
        "memory_gb": "8",
        "storage_gb": "50",
        "max_nodes": "5",
        "port_range_start": "0",
        "port_range_end": "100",
        "startup_minutes": "10",
        "cost_per_hour": "0.1",
        "enabled": "on",
    }
    response = admin_client.post(_url(WorkerTemplate, "add"), data)
    assert response.status_code == 200
    assert not WorkerTemplate.objects.filter(name="tiny").exists()

    response = admin_client.post(
        _url(WorkerTemplate, "add"), data | {"port_range_start": "2000", "port_range_end": "2999"}
    )
    assert response.status_code == 302
    assert WorkerTemplate.objects.get(name="tiny").port_range_end == 2999


@pytest.mark.django_db
def test_user_session_edit_goes_through_the_service(admin_client, graph):
    user_session = graph[UserSession]
    url = _url(UserSession, "change", user_session.pk)
    page = admin_client.get(url)
    assert "status" not in page.context["adminform"].form.fields

    bad = admin_client.post(url, _form_data(page) | {"devices": '{"not": "a list"}'})
    assert bad.status_code == 200
    assert "must be a list" in bad.context["adminform"].form.errors["devices"][0]

    good = admin_client.post(url, _form_data(page) | {"lds_part_id": "part-7", "status": "ENDED"})
    assert good.status_code == 302, good.context["adminform"].form.errors
    user_session = UserSession.objects.get(pk=user_session.pk)
    assert (user_session.lds_part_id, user_session.status) == ("part-7", "PROVISIONING")


@pytest.mark.django_db
def test_grading_session_edit_goes_through_the_service(admin_client, graph):
    grading = graph[GradingSession]
    url = _url(GradingSession, "change", grading.pk)
    page = admin_client.get(url)

    response = admin_client.post(url, _form_data(page) | {"pod_id": "pod-3", "status": "SUBMITTED"})

    assert response.status_code == 302, response.context["adminform"].form.errors
    grading = GradingSession.objects.get(pk=grading.pk)
    assert (grading.pod_id, grading.status) == ("pod-3", "PENDING")


@pytest.mark.django_db
def test_system_settings_is_a_singleton(admin_client, admin_user):
    request = _request(admin_user)
    settings_admin = _model_admin(SystemSettings)
    SystemSettings.objects.all().delete()
    assert settings_admin.has_add_permission(request)
    assert admin_client.get(_url(SystemSettings, "add")).status_code == 200

    settings = SystemSettings.load()
    assert not settings_admin.has_add_permission(request)
    assert not settings_admin.has_delete_permission(request, settings)

    url = _url(SystemSettings, "change", settings.pk)
    response = admin_client.post(url, _form_data(admin_client.get(url)) | {"drain_timeout_minutes": "15"})

    assert response.status_code == 302, response.context["adminform"].form.errors
    settings = SystemSettings.load()
    assert (settings.drain_timeout_minutes, settings.updated_by) == (15, "admin")
    assert SystemSettings.objects.count() == 1


@pytest.mark.django_db
def test_actions_need_the_change_permission(client, django_user_model, graph):
    """Staff who may only view sessions get the pages but not the actions."""
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_labletsession"))
    client.force_login(viewer)
    assert client.get(_url(LabletSession, "changelist")).status_code == 200
    assert _model_admin(LabletSession).get_actions(_request(viewer)) == {}

    client.post(
        _url(LabletSession, "changelist"),
        {"action": "terminate_sessions", "_selected_action": [str(graph[LabletSession].pk)], "post": "yes"},
    )
    assert LabletSession.objects.get(pk=graph[LabletSession].pk).status == "PENDING"


@pytest.mark.django_db
def test_worker_actions_on_a_terminated_worker_answer_with_messages(admin_client):
    terminated = WorkerFactory(status="TERMINATING")
    worker_transition(terminated, "TERMINATED", actor="test")
    for action in ("drain_workers", "cancel_drain", "set_desired_running"):
        result = _run_action(admin_client, CMLWorker, action, [terminated])
        assert result  # a message, not an exception


@pytest.mark.django_db(transaction=True)
def test_validation_dry_run_announces_nothing(admin_client):
    """The service runs once as a rolled-back dry run: only the real call reaches the change listeners."""
    seen = []

    def listener(sender, **payload):
        seen.append((sender, payload["to_status"], payload["actor"]))

    status_changed.connect(listener)
    try:
        response = admin_client.post(_url(LabletDefinition, "add"), _definition_form())
        assert response.status_code == 302
        definition = LabletDefinition.objects.get(name="admin-lab")
        past = timezone.now() - timedelta(days=1)
        assert admin_client.post(_url(LabletSession, "add"), _session_form(definition, past)).status_code == 200
    finally:
        status_changed.disconnect(listener)
    assert seen == [("definition", "ACTIVE", "admin")]


@pytest.mark.django_db
def test_admin_index_lists_every_model(admin_client):
    response = admin_client.get(reverse("admin:index"))
    assert response.status_code == 200
    for model in REGISTERED:
        assert _url(model, "changelist").encode() in response.content


def test_licence_tokens_never_show_in_the_admin(admin_client, graph):
    request = graph[LicenseRequest]
    for url in (_url(LicenseRequest, "changelist"), reverse("admin:workers_licenserequest_change", args=[request.pk])):
        assert "secret-token-123" not in admin_client.get(url).content.decode()


@pytest.mark.django_db
def test_the_exam_list_counts_its_sessions_and_links_to_them(admin_client, graph):
    exam = graph[Exam]
    page = admin_client.get(_url(Exam, "changelist")).content.decode()
    assert exam.name in page and f"exam__id__exact={exam.pk}" in page
    sessions = admin_client.get(reverse("admin:lablets_labletsession_changelist"), {"exam__id__exact": exam.pk})
    assert sessions.status_code == 200 and "exam-candidate-" in sessions.content.decode()
    change = admin_client.get(_url(Exam, "change", exam.pk)).content.decode()
    assert "exam-candidate-" in change


@pytest.mark.django_db
def test_destructive_actions_ask_first_on_an_intermediate_page_and_harmless_ones_do_not(admin_client, graph):
    """Issue 19: like "Delete selected", a destructive or candidate-affecting action lists the selected objects and
    changes nothing until its "Yes"; a harmless one (Start grading, Set desired RUNNING) runs at once."""
    session = graph[LabletSession]
    data = {"action": "terminate_sessions", "_selected_action": [str(session.pk)]}
    page = admin_client.post(_url(LabletSession, "changelist"), data)
    html = page.content.decode()
    assert page.status_code == 200 and "lcm-action-confirmation" in html
    assert "Terminate (→ TERMINATED): 1 selected" in html and "candidates lose access" in html
    assert str(session) in html and f'name="_selected_action" value="{session.pk}"' in html
    assert 'name="post" value="yes"' in html and 'name="action" value="terminate_sessions"' in html
    assert LabletSession.objects.get(pk=session.pk).status == "PENDING"  # nothing done yet
    done = admin_client.post(_url(LabletSession, "changelist"), data | {"post": "yes"})
    assert done.status_code == 302
    terminated = LabletSession.objects.get(pk=session.pk)
    assert terminated.status == "TERMINATED"
    assert terminated.history.filter(to_status="TERMINATED", actor="admin").exists()

    other = SessionFactory()
    asking = ("requeue_sessions", "requeue_sessions_elsewhere", "reinstantiate_sessions", "finish_sessions",
              "stop_sessions", "archive_sessions")  # fmt: skip
    for name in asking:
        asked = admin_client.post(_url(LabletSession, "changelist"), {"action": name, "_selected_action": [other.pk]})
        assert asked.status_code == 200 and "lcm-action-confirmation" in asked.content.decode(), name
    assert LabletSession.objects.get(pk=other.pk).status == other.status  # none of them ran

    worker = graph[CMLWorker]
    direct = admin_client.post(
        _url(CMLWorker, "changelist"), {"action": "set_desired_running", "_selected_action": [str(worker.pk)]}
    )
    assert direct.status_code == 302
    stop = admin_client.post(
        _url(CMLWorker, "changelist"), {"action": "set_desired_terminated", "_selected_action": [str(worker.pk)]}
    )
    assert stop.status_code == 200 and "This cannot be undone" in stop.content.decode()
    assert CMLWorker.objects.get(pk=worker.pk).desired_status != "TERMINATED"
