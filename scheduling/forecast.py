"""The capacity forecast (SPEC §10): booked demand against the fleet, bucket by bucket, with the autoscaler's plan.

Demand is the capacity check's own model (`scheduling.admission.occupancy`): every PENDING or capacity-holding
session occupies a worker from its start − boot lead to its end + the teardown allowance; a bucket's demand is
the sum of the sessions occupying a worker at some instant of it (cpu, memory_gb, storage_gb, nodes; `licences`
is the fewest workers, each a CML licence, that could hold it). Capacity is the fleet running or on its way
(desired RUNNING) plus what the plan adds: in each bucket the fewest workers of the planning template (the
default worker template, else the cheapest enabled ENTERPRISE one per CPU) that cover the shortfall, up to the
region's maximum; a launch is due the template's boot time before the bucket it serves, so the workers are
RUNNING by the placement lead, and a drain is planned where the need falls. `cost_per_hour` prices the fleet
and the plan. Four queries whatever the number of sessions: settings, sessions with their definitions,
workers, templates.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from scheduling.admission import booked_sessions_q, occupancy
from scheduling.capacity import Demand
from sessions.models import LabletSession
from workers.models import CMLWorker, SystemSettings, WorkerTemplate
from workers.states import COMING, DesiredStatus, LicenseType, WorkerStatus

W = WorkerStatus
MAX_WINDOW = timedelta(days=14)
MAX_BUCKETS = 2016
STEP_RANGE = (5, 1440)
DIMS = ("cpu", "memory_gb", "storage_gb", "nodes")
# A session's boot lead never reaches back more than this: the sessions read start before the window's end + it.
LEAD_REACH = timedelta(days=1)


class ForecastError(ValueError):
    """A forecast window out of bounds; `field` names the query parameter."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    step: timedelta

    def buckets(self) -> list[datetime]:
        count = math.ceil((self.end - self.start) / self.step)
        return [self.start + i * self.step for i in range(count)]


def window(start: datetime | None, end: datetime | None, step_minutes: int | None, *, now=None) -> Window:
    """The forecast window, checked: `ForecastError` naming the field when out of bounds."""
    now = now or timezone.now()
    step_minutes = 60 if step_minutes is None else step_minutes
    if not STEP_RANGE[0] <= step_minutes <= STEP_RANGE[1]:
        raise ForecastError(f"step must be {STEP_RANGE[0]}–{STEP_RANGE[1]} minutes", field="step")
    step = timedelta(minutes=step_minutes)
    if start is None:
        start = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % min(step_minutes, 60))
    try:
        end = end or start + timedelta(days=7)
        start + MAX_WINDOW + LEAD_REACH, end + LEAD_REACH  # noqa: B018 - both must stay within datetime's range
    except OverflowError:
        raise ForecastError("the window must end before the year 9999", field="from" if end is None else "to") from None
    if end <= start:
        raise ForecastError("to must be after from", field="to")
    if end - start > MAX_WINDOW:
        raise ForecastError(f"the window may span at most {MAX_WINDOW.days} days", field="to")
    if (end - start) / step > MAX_BUCKETS:
        raise ForecastError(f"at most {MAX_BUCKETS} buckets: a larger step or a shorter window", field="step")
    return Window(start, end, step)


def _planning_template(system, templates: list) -> WorkerTemplate | None:
    chosen = system.default_worker_template
    if chosen is not None and chosen.enabled:
        return chosen
    shared = [t for t in templates if t.license_type == LicenseType.ENTERPRISE and t.cpu_cores]
    return min(shared, key=lambda t: (float(t.cost_per_hour) / t.cpu_cores, t.cpu_cores, t.name), default=None)


def _fleet() -> tuple[dict, int, float]:
    """The capacity running or on its way (desired RUNNING), its worker count and its cost per hour."""
    rows = CMLWorker.objects.filter(
        desired_status=DesiredStatus.RUNNING, status__in=[W.RUNNING, W.DRAINING, *COMING]
    ).values(
        "cpu_cores", "memory_gb", "storage_gb", "max_nodes", "template__cpu_cores", "template__memory_gb",
        "template__storage_gb", "template__max_nodes", "template__cost_per_hour",
    )  # fmt: skip
    totals = dict.fromkeys(DIMS, 0)
    count, cost = 0, 0.0
    for r in rows:
        totals["cpu"] += r["cpu_cores"] or r["template__cpu_cores"] or 0
        totals["memory_gb"] += r["memory_gb"] or r["template__memory_gb"] or 0
        totals["storage_gb"] += r["storage_gb"] or r["template__storage_gb"] or 0
        totals["nodes"] += r["max_nodes"] or r["template__max_nodes"] or 0
        count += 1
        cost += float(r["template__cost_per_hour"] or 0)
    return totals, count, cost


def _demand(win: Window, system, now) -> tuple[list[dict], list[tuple]]:
    """Per bucket the demand of the sessions occupying a worker in it; and the occupancies read."""
    rows = LabletSession.objects.filter(booked_sessions_q(win.start, win.end + LEAD_REACH)).select_related("definition")
    buckets = win.buckets()
    demand = [dict.fromkeys(DIMS, 0) for _ in buckets]
    held = []
    for session in rows.defer("definition__lab_yaml"):  # the one large field; the rest is the demand
        d = session.definition
        span = occupancy(
            d, system, session.status, session.worker_id, session.timeslot_start, session.timeslot_end, now
        )
        if span is None or span[1] <= win.start or span[0] >= win.end:
            continue
        need = Demand.of(d)
        held.append((span, need))
        first = max(0, int((span[0] - win.start) // win.step))
        last = min(len(buckets) - 1, int((span[1] - win.start - timedelta(microseconds=1)) // win.step))
        for i in range(first, last + 1):
            b = demand[i]
            b["cpu"] += need.cpu_cores
            b["memory_gb"] += need.memory_gb
            b["storage_gb"] += need.storage_gb
            b["nodes"] += need.node_count
    return demand, held


def _workers_for(amounts: dict, template) -> int:
    if template is None:
        return 0
    sizes = {"cpu": template.cpu_cores, "memory_gb": template.memory_gb, "storage_gb": template.storage_gb,
             "nodes": template.max_nodes}  # fmt: skip
    return max((math.ceil(amounts[k] / sizes[k]) for k in DIMS if sizes[k] > 0 and amounts[k] > 0), default=0)


def forecast(start=None, end=None, step_minutes=None, *, now=None) -> dict:
    """The forecast over the window (see the module docstring), as the API returns it."""
    now = now or timezone.now()
    win = window(start, end, step_minutes, now=now)
    system = SystemSettings.objects.select_related("default_worker_template").filter(pk=1).first() or SystemSettings()
    demand, _ = _demand(win, system, now)
    fleet, fleet_count, fleet_cost = _fleet()
    templates = list(WorkerTemplate.objects.filter(enabled=True))
    template = _planning_template(system, templates)
    room = max(0, system.max_workers_per_region - fleet_count) if system.autoscaling_enabled else 0
    buckets, previous = [], 0
    for bucket_start, need in zip(win.buckets(), demand, strict=True):
        shortfall = {k: max(0, need[k] - fleet[k]) for k in DIMS}
        planned = min(room, _workers_for(shortfall, template))
        launch, drain = [], []
        if planned > previous:
            at = bucket_start - timedelta(minutes=template.startup_minutes)
            launch.append(_event(template, planned - previous, max(at, now), "booked demand exceeds the fleet"))
        elif planned < previous:
            drain.append(_event(template, previous - planned, bucket_start, "the booked demand falls"))
        previous = planned
        capacity = {k: fleet[k] + planned * _size(template, k) for k in DIMS}
        capacity["licences"] = fleet_count + planned
        per_hour = fleet_cost + planned * float(template.cost_per_hour if template else 0)
        buckets.append(
            {
                "start": bucket_start,
                "demand": {**need, "licences": _workers_for(need, template) if template else 0},
                "capacity": capacity,
                "planned": {"launch": launch, "drain": drain},
                "cost_per_hour": round(per_hour, 4),
            }
        )
    return {
        "from": win.start,
        "to": win.end,
        "step_minutes": int(win.step.total_seconds() // 60),
        "template": template.name if template else None,
        "buckets": buckets,
    }


def _size(template, key: str) -> int:
    if template is None:
        return 0
    return {"cpu": template.cpu_cores, "memory_gb": template.memory_gb, "storage_gb": template.storage_gb,
            "nodes": template.max_nodes}[key]  # fmt: skip


def _event(template, count: int, at: datetime, reason: str) -> dict:
    return {"template": template.name, "count": count, "at": at, "reason": reason}


def projected_cost(buckets: list[dict], step_minutes: int, *, until: datetime | None = None) -> float:
    """The cost of the buckets (up to `until`): cost per hour × the bucket's length."""
    hours = step_minutes / 60
    return round(sum(b["cost_per_hour"] * hours for b in buckets if until is None or b["start"] < until), 2)
