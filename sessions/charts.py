"""The dashboard's charts (SPEC §11), read in a fixed number of queries: sessions started and finished per hour
over the last 24 h, fleet utilisation over 24 h and 7 d (the `fleet_samples` loop's samples, with the fleet as it
is now as the last point), the median creation → READY and the pass rate of the last 24 h.

"Started" is a candidate starting (RUNNING, `started_at`), "finished" a session ending however it ends
(`ended_at`). The geometry is `lcm.charts`; `templates/includes/dashboard_charts.html` draws it.
"""

import statistics
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from lcm.charts import bar_chart, line_chart
from sessions.models import LabletSession, SessionStatusChange
from workers.models import FleetSample

HOURS = 24


def _per_hour(field: str, since: datetime) -> dict[datetime, int]:
    rows = (
        LabletSession.objects.filter(**{f"{field}__gte": since})
        .annotate(hour=TruncHour(field))
        .order_by()
        .values("hour")
        .annotate(n=Count("id"))
    )
    return {row["hour"]: row["n"] for row in rows}


def sessions_per_hour(now: datetime) -> dict:
    """Bars of sessions started and finished in each of the last 24 hours (the current one last)."""
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    hours = [first + timedelta(hours=i) for i in range(HOURS)]
    started, finished = _per_hour("started_at", first), _per_hour("ended_at", first)
    chart = bar_chart(
        [f"{hour:%H}:00" for hour in hours],
        {"started": [started.get(h, 0) for h in hours], "finished": [finished.get(h, 0) for h in hours]},
        every=3,
    )
    chart["first"], chart["last"] = hours[0], hours[-1] + timedelta(hours=1)
    return chart


def _bucketed(samples: list, since: datetime, span: timedelta, buckets: int) -> list[tuple[float, float]]:
    """`(x in [0, 1], mean CPU utilisation)` per bucket of the window that has samples."""
    width = span / buckets
    sums: dict[int, list[float]] = {}
    for sample in samples:
        index = min(buckets - 1, int((sample.at - since) / width))
        sums.setdefault(index, []).append(sample.utilisation("cpu"))
    return [((index + 0.5) / buckets, sum(values) / len(values)) for index, values in sorted(sums.items())]


def utilisation(now: datetime, current: float | None) -> dict:
    """CPU utilisation lines for the last 24 h (10-minute means) and 7 d (hourly means), ending on `current`."""
    week = now - timedelta(days=7)
    samples = list(FleetSample.objects.filter(at__gte=week).only("at", "cpu_used", "cpu_total"))
    charts = {}
    for name, span, buckets, step, fmt in (
        ("day", timedelta(hours=24), 144, timedelta(hours=6), "%H:%M"),
        ("week", timedelta(days=7), 168, timedelta(days=1), "%a"),
    ):
        since = now - span
        points = _bucketed([s for s in samples if s.at >= since], since, span, buckets)
        if current is not None:
            points.append((1.0, current))
        labels = [((step * i) / span, f"{since + step * i:{fmt}}") for i in range(int(span / step))]
        chart = line_chart(points, x_labels=labels)
        chart["samples"] = len(points)
        charts[name] = chart
    return charts


def ready_median_seconds(since: datetime) -> float | None:
    """Median seconds from creation to READY of the sessions that reached READY since `since`."""
    rows = SessionStatusChange.objects.filter(
        entity=SessionStatusChange.Entity.SESSION, to_status="READY", at__gte=since
    ).values_list("at", "session__created_at")[:20_000]
    seconds = [(at - created).total_seconds() for at, created in rows]
    return statistics.median(seconds) if seconds else None


def pass_rate(since: datetime) -> dict:
    """Graded sessions that ended since `since`: how many, how many passed, and the share."""
    counts = LabletSession.objects.filter(ended_at__gte=since, grade_result__isnull=False).aggregate(
        graded=Count("id"), passed=Count("id", filter=Q(grade_result="PASS"))
    )
    counts["rate"] = counts["passed"] / counts["graded"] if counts["graded"] else None
    return counts


def dashboard_charts(current_utilisation: float | None = None, now: datetime | None = None) -> dict:
    """Everything the dashboard's charts show; `current_utilisation`: the fleet's CPU share right now."""
    now = now or timezone.now()
    day = now - timedelta(hours=24)
    ready = ready_median_seconds(day)
    return {
        "hourly": sessions_per_hour(now),
        "utilisation": utilisation(now, current_utilisation),
        "ready_median": ready,
        "pass_rate": pass_rate(day),
        "now": now,
    }
