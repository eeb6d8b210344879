"""Reads for placement: free capacity of every worker in one query, derived from the sessions holding it."""

from django.db.models import Count, FilteredRelation, IntegerField, Max, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from lcm.metrics import Gauge
from scheduling.capacity import Demand, WorkerCapacity
from scheduling.placement import preview
from sessions.models import LabletSession
from sessions.states import capacity_holding_q
from workers.models import CMLWorker, LabRecord, Port
from workers.states import LabStatus, WorkerStatus

_CAPACITY_HOLDERS: list = []


def register_capacity_holder(holder) -> None:
    """Add what holds capacity on workers besides the sessions: `holder(worker_ids)` (None = every worker) returns
    `(worker id, Demand)` pairs in one query; each is counted as one more session whose ports are already
    allocated (Port rows). The grading app registers its re-grades' labs (`grading.regrade.capacity_holds`)."""
    if holder not in _CAPACITY_HOLDERS:
        _CAPACITY_HOLDERS.append(holder)


def worker_capacities(worker_ids=None) -> dict[str, WorkerCapacity]:
    """`{worker id: WorkerCapacity}` for every worker (or the given ones), in a single SQL query.

    Usage is summed over the sessions holding capacity; there is no counter to drift. Only those
    sessions are joined (a filtered relation), so the query does not grow with the sessions a
    worker has finished over its life; the port count is a subquery outside the GROUP BY, so it
    runs once per worker rather than once per joined session. What else holds capacity (a re-grade's lab,
    `register_capacity_holder`) is added on top, one query per holder.
    """
    ports_used = (
        Port.objects.filter(worker=OuterRef("pk")).order_by().values("worker").annotate(n=Count("id")).values("n")
    )
    zero = Value(0, output_field=IntegerField())
    rows = CMLWorker.objects.all()
    if worker_ids is not None:
        rows = rows.filter(pk__in=list(worker_ids))
    rows = rows.annotate(held=FilteredRelation("sessions", condition=capacity_holding_q("sessions__"))).annotate(
        cpu_used=Coalesce(Sum("held__definition__cpu_cores"), zero),
        memory_used=Coalesce(Sum("held__definition__memory_gb"), zero),
        storage_used=Coalesce(Sum("held__definition__storage_gb"), zero),
        nodes_used=Coalesce(Sum("held__definition__node_count"), zero),
        sessions_held=Count("held"),
        ports_used=Subquery(ports_used, output_field=IntegerField()),
    ).values(
        "id", "name", "status", "license_type", "cml_version", "cpu_cores", "memory_gb", "storage_gb",
        "max_nodes", "port_range_start", "port_range_end", "cpu_used", "memory_used", "storage_used",
        "nodes_used", "sessions_held", "ports_used",
    )  # fmt: skip
    capacities = {
        str(r["id"]): WorkerCapacity(
            worker_id=str(r["id"]),
            name=r["name"],
            status=r["status"],
            license_type=r["license_type"],
            cml_version=r["cml_version"],
            cpu_total=r["cpu_cores"],
            memory_total=r["memory_gb"],
            storage_total=r["storage_gb"],
            nodes_total=r["max_nodes"],
            ports_total=r["port_range_end"] - r["port_range_start"] + 1,
            cpu_used=r["cpu_used"],
            memory_used=r["memory_used"],
            storage_used=r["storage_used"],
            nodes_used=r["nodes_used"],
            ports_used=r["ports_used"] or 0,
            sessions=r["sessions_held"],
        )
        for r in rows
    }
    for holder in _CAPACITY_HOLDERS:
        for worker_id, demand in holder(worker_ids):
            key = str(worker_id)
            if key in capacities:
                capacities[key] = capacities[key].claimed(demand, reuse=True)
    return capacities


def worker_totals(worker_ids) -> dict[str, WorkerCapacity]:
    """`{worker id: WorkerCapacity}` of the given workers as if no session held capacity on them: their declared
    totals and the ports their labs keep (kept labs hold ports whatever runs). One query; the capacity check
    (`scheduling.admission`) adds the sessions itself, at each instant of a window."""
    ports_used = (
        Port.objects.filter(worker=OuterRef("pk")).order_by().values("worker").annotate(n=Count("id")).values("n")
    )
    rows = CMLWorker.objects.filter(pk__in=list(worker_ids)).annotate(
        ports_used=Subquery(ports_used, output_field=IntegerField())
    )
    return {
        str(r.pk): WorkerCapacity(
            worker_id=str(r.pk),
            name=r.name,
            status=r.status,
            license_type=r.license_type,
            cml_version=r.cml_version,
            cpu_total=r.cpu_cores,
            memory_total=r.memory_gb,
            storage_total=r.storage_gb,
            nodes_total=r.max_nodes,
            ports_total=r.port_range_end - r.port_range_start + 1,
            ports_used=r.ports_used or 0,
        )  # fmt: skip
        for r in rows.only(
            "id",
            "name",
            "status",
            "license_type",
            "cml_version",
            "cpu_cores",
            "memory_gb",
            "storage_gb",
            "max_nodes",
            "port_range_start",
            "port_range_end",
        )  # fmt: skip
    }


def reusable_lab_workers(definition) -> frozenset[str]:
    """Ids of workers holding a wiped, unused lab of this definition (reuse saves the import)."""
    if not definition.lab_reuse_enabled:
        return frozenset()
    rows = LabRecord.objects.filter(definition=definition, status=LabStatus.WIPED, active_session__isnull=True)
    return frozenset(str(w) for w in rows.values_list("worker_id", flat=True).distinct())


def reusable_labs_by_definition(definitions) -> dict:
    """`{definition id: frozenset of worker ids}` as `reusable_lab_workers` gives per definition, in one query."""
    found: dict = {d.pk: set() for d in definitions if d.lab_reuse_enabled}
    if found:
        rows = LabRecord.objects.filter(
            definition_id__in=list(found), status=LabStatus.WIPED, active_session__isnull=True
        ).values_list("definition_id", "worker_id")
        for definition_id, worker_id in rows.distinct():
            found[definition_id].add(str(worker_id))
    return {d.pk: frozenset(found.get(d.pk, ())) for d in definitions}


def placement_preview(definition) -> list:
    """Dry run of placement for one session of `definition`: every worker with its score or rejection."""
    return preview(
        list(worker_capacities().values()),
        Demand.of(definition),
        cml_version_min=definition.cml_version_min,
        cml_version_max=definition.cml_version_max,
        reusable_on=reusable_lab_workers(definition),
    )


def worker_ends(worker_ids=None) -> dict[str, object]:
    """Worker id → the latest timeslot end of the sessions holding capacity on it (end-time aware placement,
    SPEC §10), in one query."""
    rows = LabletSession.objects.filter(capacity_holding_q(), worker__isnull=False)
    if worker_ids is not None:
        rows = rows.filter(worker_id__in=list(worker_ids))
    return {
        str(w): end
        for w, end in rows.values("worker_id").annotate(end=Max("timeslot_end")).values_list("worker_id", "end")
    }


# Workers whose capacity sessions may use (the dashboard's fleet capacity), and those EC2 bills for.
TAKING_SESSIONS = (WorkerStatus.RUNNING, WorkerStatus.DRAINING)
BILLED = (WorkerStatus.PROVISIONING, WorkerStatus.STARTING, WorkerStatus.RUNNING, WorkerStatus.DRAINING,
          WorkerStatus.STOPPING)  # fmt: skip
RESOURCES = ("cpu", "memory", "storage", "nodes", "ports")


def fleet_utilisation(capacities=None) -> dict:
    """`{resource: (used, total)}` over the workers taking sessions, plus `workers`: how many there are."""
    capacities = worker_capacities().values() if capacities is None else capacities
    live = [c for c in capacities if c.status in TAKING_SESSIONS]
    totals: dict = {}
    for resource in RESOURCES:
        used = sum(getattr(c, f"{resource}_used") for c in live)
        totals[resource] = (used, sum(getattr(c, f"{resource}_total") for c in live))
    totals["workers"] = len(live)
    return totals


def fleet_cost_per_hour() -> float:
    """What the billed workers cost per hour (their templates' `cost_per_hour`)."""
    total = CMLWorker.objects.filter(status__in=BILLED).aggregate(cost=Sum("template__cost_per_hour"))["cost"]
    return float(total or 0)


def fleet_gauges() -> list[Gauge]:
    """Scrape-time metrics (SPEC §11): workers by status, fleet utilisation and capacity, cost per hour."""
    capacities = list(worker_capacities().values())
    workers = Gauge("lcm_workers", "CML workers by status.", ("status",))
    workers.samples = {(status,): 0 for status in WorkerStatus.values}
    for capacity in capacities:
        workers.samples[(capacity.status,)] += 1
    utilisation = Gauge(
        "lcm_fleet_utilisation_ratio",
        "Share of the capacity of the workers taking sessions (RUNNING, DRAINING) that sessions hold, by resource.",
        ("resource",),
    )
    capacity = Gauge("lcm_fleet_capacity", "Capacity of the workers taking sessions, by resource.", ("resource",))
    totals = fleet_utilisation(capacities)
    for resource in RESOURCES:
        used, total = totals[resource]
        utilisation.samples[(resource,)] = used / total if total else 0.0
        capacity.samples[(resource,)] = total
    cost = Gauge("lcm_fleet_cost_per_hour", "Hourly cost of the billed workers (their templates' cost_per_hour).")
    cost.samples = {(): fleet_cost_per_hour()}
    return [workers, utilisation, capacity, cost]
