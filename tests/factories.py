"""factory_boy factories for every model; statuses can be set directly at creation only."""

from datetime import timedelta
from pathlib import Path

import factory
from django.utils import timezone

from grading.models import GradingSession, ScoreReport
from sessions.labyaml import analyze_lab_yaml
from sessions.models import LabletDefinition, LabletSession, UserSession
from workers.models import CMLWorker, LabRecord, WorkerTemplate

DEMO_LAB = (Path(__file__).resolve().parent.parent / "sessions" / "demo" / "demo-lab.yaml").read_text()
_DEMO = analyze_lab_yaml(DEMO_LAB)


class DefinitionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LabletDefinition

    name = factory.Sequence(lambda n: f"lab-{n}")
    version = "1.0.0"
    lab_yaml = DEMO_LAB
    lab_yaml_hash = "0" * 64
    cpu_cores = 2
    memory_gb = 4
    storage_gb = 10
    node_count = _DEMO.node_count
    node_definitions_required = _DEMO.node_definitions
    port_template = _DEMO.port_template
    max_duration_minutes = 60
    form_qualified_name = "Exam-Demo-1.0"
    grading_enabled = True


class TemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkerTemplate
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"template-{n}")
    instance_type = "m5.2xlarge"
    ami_name_pattern = "cml-2.9*"
    cpu_cores = 16
    memory_gb = 64
    storage_gb = 400
    max_nodes = 60


class WorkerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CMLWorker

    name = factory.Sequence(lambda n: f"worker-{n}")
    status = "RUNNING"
    cml_version = "2.9.0"
    cml_base_url = factory.LazyAttribute(lambda o: f"http://127.0.0.1:8101/w/{o.name}")
    cpu_cores = 16
    memory_gb = 64
    storage_gb = 400
    max_nodes = 60
    port_range_start = 2000
    port_range_end = 9999


class SessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LabletSession

    definition = factory.SubFactory(DefinitionFactory)
    definition_version = factory.LazyAttribute(lambda o: o.definition.version)
    owner = factory.Sequence(lambda n: f"candidate-{n}")
    timeslot_start = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=5))
    timeslot_end = factory.LazyAttribute(lambda o: o.timeslot_start + timedelta(minutes=60))


class UserSessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UserSession

    lablet_session = factory.SubFactory(SessionFactory)
    lds_session_id = factory.Sequence(lambda n: f"lds-{n}")
    login_url = "https://lds.example.test/login/abc"
    status = "PROVISIONED"


class LabRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LabRecord

    worker = factory.SubFactory(WorkerFactory)
    cml_lab_id = factory.Sequence(lambda n: f"lab-{n:04d}")
    title = "demo"
    status = "DEFINED"


class GradingSessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GradingSession

    lablet_session = factory.SubFactory(SessionFactory)


class ScoreReportFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ScoreReport

    lablet_session = factory.SubFactory(SessionFactory)
    score = 80
    max_score = 100
    cut_score = 70
    passed = True
