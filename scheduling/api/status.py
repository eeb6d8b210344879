"""`GET /api/v1/status/` (SPEC §5.1): versions, counts by status, and the control loops' health.

Loop freshness comes from the heartbeat each tick writes; `queue_depth` counts the sessions
waiting for the loops (eligible PENDING, SCHEDULED, INSTANTIATING); `leader` is the holder of
the placement lease, null when nobody holds it or coordination does not answer.
"""

import platform

import django
import rest_framework
from django.db.models import Count
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

import lcm
from lcm.api.permissions import IsInstructor
from lcm.coordination import coordinator
from lcm.loops import loop_health
from sessions.selectors import queue_depth, session_counts_by_status
from workers.models import CMLWorker
from workers.states import WorkerStatus


class VersionsSerializer(serializers.Serializer):
    lcm = serializers.CharField()
    django = serializers.CharField()
    djangorestframework = serializers.CharField()
    python = serializers.CharField()


class LoopSerializer(serializers.Serializer):
    """One control loop's freshness."""

    name = serializers.CharField()
    last_tick_at = serializers.DateTimeField(allow_null=True)
    seconds_since_tick = serializers.FloatField(allow_null=True)
    healthy = serializers.BooleanField(allow_null=True)


class StatusSerializer(serializers.Serializer):
    version = serializers.CharField(help_text="LCM's version.")
    versions = VersionsSerializer()
    generated_at = serializers.DateTimeField()
    sessions = serializers.DictField(child=serializers.IntegerField(), help_text="Session count per status.")
    workers = serializers.DictField(child=serializers.IntegerField(), help_text="Worker count per status.")
    loops = LoopSerializer(many=True, help_text="Freshness per registered control loop (healthy: ticked lately).")
    queue_depth = serializers.IntegerField(
        allow_null=True, help_text="Sessions waiting for the loops: eligible PENDING + SCHEDULED + INSTANTIATING."
    )
    leader = serializers.CharField(
        allow_null=True, help_text="Holder of the placement leader lease; null = nobody holds it (or no answer)."
    )


def worker_counts_by_status() -> dict[str, int]:
    """`{status: count}` with every worker status present (zero when none)."""
    counts = dict.fromkeys(WorkerStatus.values, 0)
    for row in CMLWorker.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


class StatusView(APIView):
    """Versions, counts and loop health for dashboards and monitoring (instructors and admins)."""

    permission_classes = [IsInstructor]

    @extend_schema(summary="System status", responses={200: StatusSerializer})
    def get(self, request):
        body = {
            "version": lcm.__version__,
            "versions": {
                "lcm": lcm.__version__,
                "django": django.get_version(),
                "djangorestframework": rest_framework.VERSION,
                "python": platform.python_version(),
            },
            "generated_at": timezone.now(),
            "sessions": session_counts_by_status(),
            "workers": worker_counts_by_status(),
            "loops": _loops(),
            "queue_depth": _queue_depth(),
            "leader": _leader(),
        }
        return Response(StatusSerializer(body).data)


def _loops() -> list[dict]:
    now = timezone.now()
    return [
        {
            "name": row["name"],
            "last_tick_at": row["last_tick"],
            "seconds_since_tick": round((now - row["last_tick"]).total_seconds(), 3) if row["last_tick"] else None,
            "healthy": None if row["last_tick"] is None else row["state"] == "ok",
        }
        for row in loop_health()
    ]


def _queue_depth() -> int:
    depth = queue_depth()
    return depth["eligible"] + depth["scheduled"] + depth["instantiating"]


def _leader() -> str | None:
    try:
        return coordinator().leader("placement")
    except Exception:  # coordination down degrades latency, never the status endpoint
        return None
