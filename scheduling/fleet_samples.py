"""The `fleet_samples` loop (SPEC §11): every `LCM_LOOP_FLEET_SAMPLES_SECONDS`, what the workers taking sessions
offer and what sessions hold of it, for the dashboard's utilisation chart (24 h / 7 d).

A tick samples unless a sample newer than half an interval exists (two processes ticking at once, or a
restart, do not sample twice); samples older than `LCM_FLEET_SAMPLE_DAYS` are dropped as it goes.
"""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from scheduling.selectors import fleet_utilisation
from workers.models import FleetSample
from workers.services import fleet_sample_record


def sample_fleet() -> list:
    """The loop's tick (a singleton: it does the work itself and fans nothing out)."""
    now = timezone.now()
    recent = now - timedelta(seconds=settings.LCM_LOOP_FLEET_SAMPLES_SECONDS / 2)
    if not FleetSample.objects.filter(at__gt=recent).exists():
        fleet_sample_record(fleet_utilisation(), at=now, keep_days=settings.LCM_FLEET_SAMPLE_DAYS)
    return []
