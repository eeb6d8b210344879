"""Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the database answers)."""

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

import lcm

logger = logging.getLogger("lcm.health")


@require_GET
def healthz(request):
    """The process is up."""
    return JsonResponse({"status": "ok", "version": lcm.__version__})


@require_GET
def readyz(request):
    """The process can serve: the database answers a query."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any database failure means "not ready", never a 500
        logger.warning("readiness check failed: %s", exc.__class__.__name__)
        return JsonResponse({"status": "unavailable", "checks": {"database": "down"}}, status=503)
    return JsonResponse({"status": "ok", "checks": {"database": "ok"}})
