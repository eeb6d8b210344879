"""Demo data for the embedded default: templates, one ACTIVE definition, three RUNNING workers, users, sessions.

Everything goes through the services, and seeding is idempotent: what exists is kept.
"""

import logging
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from sessions.booking import session_create
from sessions.definitions import definition_create
from sessions.models import LabletDefinition, LabletSession
from workers.models import CMLWorker, WorkerTemplate
from workers.services import worker_create
from workers.template_services import templates_seed

logger = logging.getLogger("lcm.sessions.seed")

DEMO_LAB_FILE = Path(__file__).resolve().parent / "demo" / "demo-lab.yaml"
DEMO_DEFINITION = "lcm-demo-router-desktop"
DEMO_WORKERS = ("demo-worker-1", "demo-worker-2", "demo-worker-3")
DEMO_OWNERS = ("alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com")
ACTOR = "lcm_seed_demo"


DEMO_REFUSED = (
    "demo users (admin/admin) and demo data are for the embedded default only (DJANGO_DEBUG=1); "
    "with DJANGO_DEBUG=0 start LCM with scripts/lcm-stack or docker compose and create users with createsuperuser"
)


class DemoDataRefused(Exception):
    """Production (`DEMO_DATA_ALLOWED` off) never gets the demo users or data."""


def refuse_demo_data_in_production() -> None:
    if not settings.DEMO_DATA_ALLOWED:
        raise DemoDataRefused(DEMO_REFUSED)


def database_is_empty() -> bool:
    """True when no definition, worker or session exists yet (a fresh install)."""
    return not (LabletDefinition.objects.exists() or CMLWorker.objects.exists() or LabletSession.objects.exists())


def ensure_users(admin_password: str | None = None) -> list[str]:
    """The role groups, plus a demo `admin` superuser and an `instructor` when no user exists yet."""
    refuse_demo_data_in_production()
    for name in ("lcm-admins", "instructors"):
        Group.objects.get_or_create(name=name)
    user_model = get_user_model()
    created = []
    if not user_model.objects.exists():
        # The demo password (`admin`) skips the validators on purpose: demo users exist only with DEBUG on.
        password = admin_password or settings.DEMO_ADMIN_PASSWORD
        admin = user_model.objects.create_superuser("admin", "admin@example.com", password)
        admin.groups.add(Group.objects.get(name="lcm-admins"))
        instructor = user_model.objects.create_user("instructor", "instructor@example.com", password)
        instructor.groups.add(Group.objects.get(name="instructors"))
        created = ["admin", "instructor"]
    return created


@transaction.atomic
def seed_demo() -> dict:
    """Create whatever part of the demo data is missing; returns what was created."""
    refuse_demo_data_in_production()
    created: dict[str, list[str]] = {"templates": [], "definitions": [], "workers": [], "sessions": [], "users": []}
    created["templates"] = templates_seed()["created"]
    created["users"] = ensure_users()

    definition = LabletDefinition.objects.filter(name=DEMO_DEFINITION).order_by("-created_at").first()
    if definition is None:
        definition = definition_create(
            actor=ACTOR,
            name=DEMO_DEFINITION,
            version="1.0.0",
            description="Configure the edge router from the desktop; graded automatically.",
            lab_yaml=DEMO_LAB_FILE.read_text(),
            lab_artifact_uri="sessions/demo/demo-lab.yaml",
            # Small enough that the three demo workers (16 CPU, 64 GB each) hold a class of 48 at once: an exam
            # of 25 fits beside the demo bookings under the default admission (refuse, SPEC §10).
            cpu_cores=1,
            memory_gb=2,
            storage_gb=10,
            license_affinity=["ENTERPRISE"],
            cml_version_min="2.8",
            max_duration_minutes=60,
            form_qualified_name="LCM-Demo-Exam-1.0",
            grading_enabled=True,
        )
        created["definitions"].append(str(definition))

    template = WorkerTemplate.objects.filter(name="cml-medium").first()
    for name in DEMO_WORKERS:
        if not CMLWorker.objects.filter(name=name).exists():
            worker_create(
                name=name,
                actor=ACTOR,
                template=template,
                status="RUNNING",
                reason="demo worker backed by the CML simulator",
                cml_base_url=f"{settings.LCM_CML_SIMULATOR_URL.rstrip('/')}/w/{name}",
                cml_version="2.9.0",
                service_status="READY",
            )
            created["workers"].append(name)

    if not LabletSession.objects.exists():
        now = timezone.now()
        starts = [None, None, now + timedelta(minutes=10), now + timedelta(hours=2)]
        for index, (owner, start) in enumerate(zip(DEMO_OWNERS, starts, strict=True)):
            session = session_create(
                definition=definition,
                owner=owner,
                timeslot_start=start,
                reservation_id=f"demo-{index + 1}",
                actor=ACTOR,
                reason="demo booking",
            )
            created["sessions"].append(str(session.pk))
    logger.info("demo data seeded: %s", {k: len(v) for k, v in created.items()})
    return created
