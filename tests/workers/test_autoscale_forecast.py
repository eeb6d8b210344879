"""The autoscaler plans from the forecast (SPEC §10): an exam booked three days ahead launches nothing until its
placement lead plus a boot time is reached; then it launches so the workers are RUNNING by the placement lead, and
drains them once the exam is over (simulated clock: the tick's `now`)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from sessions.models import LabletSession
from tests.factories import DefinitionFactory
from workers.autoscaling import autoscale_tick
from workers.models import CMLWorker, SystemSettings, WorkerTemplate

pytestmark = pytest.mark.django_db


def test_an_exam_three_days_ahead_is_launched_for_a_boot_time_before_its_placement_lead():
    system = SystemSettings.load()
    system.autoscaling_enabled = True
    system.max_workers_per_region = 50
    system.scale_up_cooldown_minutes = 0
    system.scale_down_cooldown_minutes = 0
    system.save()
    boot = min(t.startup_minutes for t in WorkerTemplate.objects.filter(enabled=True))
    lead = system.placement_lead_minutes
    definition = DefinitionFactory(cpu_cores=4, memory_gb=8)
    start = (timezone.now() + timedelta(days=3)).replace(second=0, microsecond=0)
    LabletSession.objects.bulk_create(
        LabletSession(
            definition=definition,
            definition_version="1.0.0",
            owner=f"c{i}",
            timeslot_start=start,
            timeslot_end=start + timedelta(hours=2),
        )  # fmt: skip
        for i in range(12)
    )
    # Earlier than the placement lead plus the boot time: nothing to do yet.
    assert autoscale_tick(now=start - timedelta(minutes=lead + boot + 5), require_leader=False) == []
    # A boot time before the placement lead: the workers launch now, RUNNING when placement wants them.
    decisions = autoscale_tick(now=start - timedelta(minutes=lead + boot), require_leader=False)
    launched = [d for d in decisions if d.action == "LAUNCH"]
    assert launched and sum(len(d.sessions) for d in launched) == 12
    assert CMLWorker.objects.count() == len(launched)
    template = WorkerTemplate.objects.get(name=launched[0].template_name)
    assert template.startup_minutes <= boot + 0  # the template launched boots within the planned time

    # The workers came up (the reconciler's part, set here), the exam ran and ended: every worker drains.
    CMLWorker.objects.update(status="RUNNING")
    LabletSession.objects.update(status="TERMINATED")
    after = autoscale_tick(now=start + timedelta(hours=2, minutes=15), require_leader=False)
    assert sorted(d.action for d in after) == ["DRAIN"] * len(launched)
