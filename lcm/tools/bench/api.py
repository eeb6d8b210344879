"""`manage.py bench_api [--sessions 10000]`: latency of the session list and detail endpoints (SPEC §6.3).

Everything runs inside one transaction that is rolled back at the end: the sessions (bulk
inserted), their definition and workers, the benchmark user and its token never outlive
the run, even if it is interrupted. Requests go through the whole Django stack (middleware,
token authentication, DRF, serializers) with the test client. The peer, measured in the
same run (requests alternate between the two, so both see the same machine load), is a
minimal Django view that runs the same SQL as the endpoint (built from the same queryset)
and returns the raw rows as JSON: the difference between the two is what the REST layer
costs. Queries per request are counted for both, and for the list at two
page sizes (they must not grow with the page).
"""

import os
import random
import statistics
import time
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, reset_queries, transaction
from django.http import JsonResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import include, path
from django.utils import timezone

from lcm.api.pagination import page_queryset
from lcm.api.tokens import token_create
from lcm.management.command_utils import fail
from lcm.tools.bench import BenchRun
from sessions.api.views import session_rows
from sessions.definitions import definition_create
from sessions.models import LabletSession
from sessions.states import SessionStatus
from workers.services import worker_create
from workers.states import WorkerStatus

DEMO_LAB = Path(settings.BASE_DIR) / "sessions" / "demo" / "demo-lab.yaml"
TARGET_P95_MS = 50.0
BATCH = 2000


class _Rollback(Exception):
    """Raised at the end of the run so that everything it wrote is rolled back."""


def _rows(sql_and_params) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(*sql_and_params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _base_queryset():
    """The queryset the session endpoints run (same joins, same ordering)."""
    return session_rows()


def raw_session_list(request):
    """Peer of `GET /api/v1/sessions/?page=N&page_size=S`: the same COUNT and page SELECT, raw rows out."""
    size = int(request.GET.get("page_size", 50))
    page = int(request.GET.get("page", 1))
    rows = _base_queryset()
    count = rows.count()
    offset = (page - 1) * size
    results = _rows(page_queryset(rows, offset, size).query.sql_with_params())
    return JsonResponse({"count": count, "results": results}, encoder=DjangoJSONEncoder)


def raw_session_detail(request, pk):
    """Peer of `GET /api/v1/sessions/{id}/`: the same SELECT as `QuerySet.get()` (unordered, at most 21 rows)."""
    rows = _rows(_base_queryset().filter(pk=pk).order_by()[:21].query.sql_with_params())
    return JsonResponse(rows[0], encoder=DjangoJSONEncoder)


class BenchUrlconf:
    """The benchmark's URL map (ROOT_URLCONF while it runs): the project's, plus the two peer views."""

    urlpatterns = [
        path("_bench/sessions/", raw_session_list),
        path("_bench/sessions/<uuid:pk>/", raw_session_detail),
        path("", include(settings.ROOT_URLCONF)),
    ]


def _percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


class ApiBench(BenchRun):
    """One run of `bench_api`, inside a transaction rolled back at the end."""

    def run(self, options) -> None:
        if not 1 <= options["sessions"] <= 1_000_000:
            raise fail("--sessions must be between 1 and 1000000")
        if not 10 <= options["requests"] <= 100_000:
            raise fail("--requests must be between 10 and 100000")
        if not 1 <= options["page_size"] <= 500:
            raise fail("--page-size must be between 1 and 500")
        result = {}
        try:
            with transaction.atomic(), override_settings(ROOT_URLCONF=BenchUrlconf):
                result = self._run(options)
                raise _Rollback
        except _Rollback:
            pass
        self._vacuum()
        if options["json"]:
            self.write_json(result)
        else:
            self._print(result)

    @staticmethod
    def _vacuum() -> None:
        """Reclaim the rolled-back rows, so repeated runs do not slow each other down with dead tuples.

        Only on PostgreSQL and outside a transaction (VACUUM cannot run inside one, e.g. in a test).
        """
        if connection.vendor != "postgresql" or connection.in_atomic_block:
            return
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {LabletSession._meta.db_table}")

    # ---------------------------------------------------------------------------------

    def _seed(self, count: int) -> tuple[list[uuid.UUID], str]:
        tag = uuid.uuid4().hex[:8]
        definition = definition_create(
            actor=self.actor, name=f"bench-api-{tag}", lab_yaml=DEMO_LAB.read_text(), max_duration_minutes=120
        )
        workers = [
            worker_create(
                name=f"bench-api-{tag}-{i}", actor=self.actor, status=WorkerStatus.RUNNING, cpu_cores=64, memory_gb=256
            )
            for i in range(5)
        ]
        now = timezone.now()
        statuses = SessionStatus.values
        ids = []
        for start in range(0, count, BATCH):
            batch = []
            for index in range(start, min(start + BATCH, count)):
                status = statuses[index % len(statuses)]
                begin = now + timedelta(minutes=index % 5000)
                session = LabletSession(
                    definition=definition,
                    definition_version=definition.version,
                    owner=f"bench-candidate-{index}",
                    reservation_id=f"bench-api-{tag}-{index}",
                    status=status,
                    timeslot_start=begin,
                    timeslot_end=begin + timedelta(minutes=60),
                    worker=None if status == SessionStatus.PENDING else workers[index % len(workers)],
                    allocated_ports={"edge-router_serial": 2000 + index % 1000},
                    created_by=self.actor,
                )
                batch.append(session)
                ids.append(session.pk)
            LabletSession.objects.bulk_create(batch)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {LabletSession._meta.db_table}")
        user = get_user_model().objects.create_user(f"bench-api-{tag}", is_staff=True)
        return ids, token_create(user, actor=self.actor, name="bench_api").key

    @staticmethod
    def _timed(client, url, headers) -> tuple[float, int]:
        reset_queries()  # the query log keeps 9000 entries; a long run must not saturate it
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            response = client.get(url, **headers)
            elapsed = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise fail(f"GET {url} answered {response.status_code}: {response.content[:200]!r}")
        return elapsed, len(captured.captured_queries)

    @staticmethod
    def _summary(samples: list[tuple[float, int]]) -> dict:
        timings, queries = [t for t, _ in samples], [q for _, q in samples]
        return {
            "p50_ms": round(_percentile(timings, 50), 2),
            "p95_ms": round(_percentile(timings, 95), 2),
            "mean_ms": round(statistics.fmean(timings), 2),
            "queries_per_request": max(queries),
            "queries_constant": min(queries) == max(queries),
        }

    def _measure_pair(self, client, api_urls, peer_urls, headers) -> tuple[dict, dict]:
        """Time the endpoint and its peer alternately, so both see the same machine load."""
        api, peer = [], []
        for api_url, peer_url in zip(api_urls, peer_urls, strict=True):
            api.append(self._timed(client, api_url, headers))
            peer.append(self._timed(client, peer_url, {}))
        return self._summary(api), self._summary(peer)

    def _data_sql(self, client, url, headers) -> list[str]:
        """The SQL of one request that reads sessions (authentication queries left out)."""
        reset_queries()
        with CaptureQueriesContext(connection) as captured:
            client.get(url, **headers)
        table = LabletSession._meta.db_table
        return [q["sql"] for q in captured.captured_queries if f'"{table}"' in q["sql"]]

    def _run(self, options) -> dict:
        rng = random.Random(options["seed"])
        ids, key = self._seed(options["sessions"])
        total = LabletSession.objects.count()
        size, count = options["page_size"], options["requests"]
        pages = max(1, total // size)
        client = Client()
        auth = {"HTTP_AUTHORIZATION": f"Token {key}"}
        list_pages = [1 + rng.randrange(min(pages, 200)) for _ in range(count)]
        detail_ids = [rng.choice(ids) for _ in range(count)]
        api_list = [f"/api/v1/sessions/?page={p}&page_size={size}" for p in list_pages]
        raw_list = [f"/_bench/sessions/?page={p}&page_size={size}" for p in list_pages]
        api_detail = [f"/api/v1/sessions/{pk}/" for pk in detail_ids]
        raw_detail = [f"/_bench/sessions/{pk}/" for pk in detail_ids]
        for url in (*api_list[:10], *raw_list[:10], *api_detail[:10], *raw_detail[:10]):  # warm-up
            client.get(url, **auth)
        list_pair = self._measure_pair(client, api_list, raw_list, auth)
        detail_pair = self._measure_pair(client, api_detail, raw_detail, auth)
        result = {
            "sessions_inserted": options["sessions"],
            "sessions_in_db": total,
            "requests_per_endpoint": count,
            "page_size": size,
            "target_p95_ms": TARGET_P95_MS,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "api_list": list_pair[0],
            "peer_list": list_pair[1],
            "api_detail": detail_pair[0],
            "peer_detail": detail_pair[1],
            "same_sql": {
                "list": self._data_sql(client, api_list[0], auth) == self._data_sql(client, raw_list[0], {}),
                "detail": self._data_sql(client, api_detail[0], auth) == self._data_sql(client, raw_detail[0], {}),
            },
        }
        small = self._summary([self._timed(client, f"/api/v1/sessions/?page=1&page_size={min(size, 10)}", auth)])
        result["list_queries_by_page_size"] = {
            str(min(size, 10)): small["queries_per_request"],
            str(size): result["api_list"]["queries_per_request"],
        }
        result["target_met"] = all(result[k]["p95_ms"] <= TARGET_P95_MS for k in ("api_list", "api_detail"))
        return result

    def _print(self, r: dict) -> None:
        self.stdout.write(
            f"bench_api: {r['sessions_inserted']} sessions inserted ({r['sessions_in_db']} in the database), "
            f"{r['requests_per_endpoint']} requests per endpoint (random pages among the first 200), "
            f"list page of {r['page_size']}; load average {r['load_average_1m']} on {r['cpus']} CPUs"
        )
        self.stdout.write(f"{'endpoint':<40}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}{'queries/req':>13}")
        rows = (
            ("GET /api/v1/sessions/ (REST)", "api_list"),
            ("  peer: same SQL, minimal view", "peer_list"),
            ("GET /api/v1/sessions/{id}/ (REST)", "api_detail"),
            ("  peer: same SQL, minimal view", "peer_detail"),
        )
        for label, key in rows:
            m = r[key]
            self.stdout.write(
                f"{label:<40}{m['p50_ms']:>9.2f}{m['p95_ms']:>9.2f}{m['mean_ms']:>9.2f}{m['queries_per_request']:>13}"
            )
        same = r["same_sql"]
        self.stdout.write(
            f"same session SQL as the peer: list {'yes' if same['list'] else 'NO'}, "
            f"detail {'yes' if same['detail'] else 'NO'}; REST queries = the peer's + token authentication"
        )
        by_size = ", ".join(f"page_size {k}: {v}" for k, v in r["list_queries_by_page_size"].items())
        self.stdout.write(f"list queries per request by page size: {by_size}")
        verdict = "met" if r["target_met"] else "NOT met"
        self.stdout.write(f"target p95 ≤ {r['target_p95_ms']:.0f} ms for list and detail: {verdict}")
