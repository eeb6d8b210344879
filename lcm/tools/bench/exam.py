"""`manage.py bench_exam [--candidates 500 --booked 2000 --workers 40]`: booking an exam (issue 14, SPEC §8, §10).

Measured in one run, on a fleet of `--workers` RUNNING workers and `--booked` sessions already booked over the
day (a third of them overlapping the exam's window, so the capacity check has real work):
1. `exam_book` of `--candidates` candidates, admission `refuse` (the capacity check included): seconds, ms per
   booking, queries;
2. its peer: the same number of single bookings through `session_create` (the same service the REST POST and
   the booking page use), each with its own capacity check under the admission lock;
3. `capacity_check` alone for the exam (what the booking page shows before booking).
Rows are created under a unique `bench-<tag>-` prefix and deleted at the end, even on failure; the
after-commit listeners (etcd projection, reconcile enqueueing) are detached meanwhile and INFO logging is off.
"""

import os
import time
import uuid
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from lcm.management.command_utils import fail
from lcm.tools.bench import BenchRun, fixtures
from scheduling.admission import capacity_check
from scheduling.capacity import WorkerCapacity
from sessions.booking import session_create
from sessions.exams import MAX_CANDIDATES, exam_book
from sessions.models import Exam, LabletSession


def _fleet(n: int) -> list[WorkerCapacity]:
    """`n` cml-large-sized ENTERPRISE workers (96 CPU, 384 GB, 250 nodes)."""
    return [
        WorkerCapacity(
            worker_id="",
            name="",
            status="RUNNING",
            license_type="ENTERPRISE",
            cml_version="2.9.0",
            cpu_total=96,
            memory_total=384,
            storage_total=4000,
            nodes_total=250,
            ports_total=8000,
        )  # fmt: skip
        for _ in range(n)
    ]


class ExamBench(BenchRun):
    """One run of `bench_exam`."""

    def run(self, options) -> None:
        if not 1 <= options["candidates"] <= MAX_CANDIDATES:
            raise fail(f"--candidates must be between 1 and {MAX_CANDIDATES}")
        if not 0 <= options["booked"] <= 100_000:
            raise fail("--booked must be between 0 and 100000")
        if not 1 <= options["workers"] <= 10_000:
            raise fail("--workers must be between 1 and 10000")
        tag = uuid.uuid4().hex[:8]
        fixtures.vacuum()
        try:
            with fixtures.listeners_off(), fixtures.quiet_logs():
                result = self._run(tag, options)
        finally:
            with fixtures.listeners_off():
                LabletSession.objects.filter(definition__name__startswith=f"bench-{tag}-").delete()
                Exam.objects.filter(name__startswith=f"bench-{tag}-").delete()
                fixtures.remove_fixtures(tag)
            fixtures.vacuum()
        if options["json"]:
            self.write_json(result)
        else:
            self._print(result)

    def _run(self, tag: str, options) -> dict:
        n = options["candidates"]
        definition = fixtures.seed_definitions(tag, actor=self.actor)["lab-medium"]
        fixtures.seed_workers(tag, _fleet(options["workers"]), actor=self.actor)
        now = timezone.now().replace(microsecond=0)
        start, end = (
            now + timedelta(hours=3),
            now + timedelta(hours=3, minutes=min(60, definition.max_duration_minutes)),
        )
        fixtures.seed_sessions(tag, self._background(definition, options["booked"], now), actor=self.actor)
        fixtures.analyze()
        candidates = [{"owner": f"bench-{tag}-exam-{i}", "reservation_id": f"bench-{tag}-r{i}"} for i in range(n)]

        check = self._timed(lambda: capacity_check(definition, start, end, n))
        exam = self._timed(
            lambda: exam_book(
                name=f"bench-{tag}-exam",
                definition=definition,
                timeslot_start=start,
                timeslot_end=end,
                candidates=candidates,
                actor=self.actor,
                on_capacity="refuse",
            )  # fmt: skip
        )
        single_start, single_end = start + timedelta(hours=6), end + timedelta(hours=6)
        singles = self._timed(
            lambda: [
                session_create(
                    definition=definition,
                    owner=f"bench-{tag}-single-{i}",
                    actor=self.actor,
                    timeslot_start=single_start,
                    timeslot_end=single_end,
                    on_capacity="refuse",
                )  # fmt: skip
                for i in range(n)
            ]
        )
        return {
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "candidates": n,
            "booked_before": options["booked"],
            "workers": options["workers"],
            "capacity_check": _figures(check, 1) | {"fits": check["value"].fits},
            "exam_book": _figures(exam, n) | {"fits": exam["value"].verdict.fits},
            "single_bookings": _figures(singles, n),
        }

    @staticmethod
    def _background(definition, count: int, now) -> list[dict]:
        """`count` sessions over the next 12 hours, an hour each, one starting every few minutes."""
        step = timedelta(minutes=12 * 60 / max(count, 1))
        return [
            {
                "definition": definition,
                "timeslot_start": now + timedelta(minutes=30) + i * step,
                "timeslot_end": now + timedelta(minutes=90) + i * step,
            }  # fmt: skip
            for i in range(count)
        ]

    @staticmethod
    def _timed(call) -> dict:
        with CaptureQueriesContext(connection) as queries:
            began = time.perf_counter()
            value = call()
            seconds = time.perf_counter() - began
        return {"value": value, "seconds": seconds, "queries": len(queries)}

    def _print(self, result: dict) -> None:
        write = self.stdout.write
        write(
            f"bench_exam: {result['candidates']} candidates, {result['booked_before']} sessions booked before, "
            f"{result['workers']} workers (load average {result['load_average']})"
        )
        for key, label in (
            ("capacity_check", "capacity check alone"),
            ("exam_book", "exam_book (check included)"),
            ("single_bookings", f"{result['candidates']} × session_create (peer)"),
        ):
            row = result[key]
            write(
                f"  {label:<34} {row['seconds']:8.3f} s  {row['ms_per_booking']:8.2f} ms/booking  "
                f"{row['queries']:6d} queries"
            )
        ratio = result["single_bookings"]["seconds"] / max(result["exam_book"]["seconds"], 1e-9)
        write(f"  the exam books {ratio:.1f}× faster than the same number of single bookings")


def _figures(timed: dict, bookings: int) -> dict:
    return {
        "seconds": round(timed["seconds"], 4),
        "ms_per_booking": round(timed["seconds"] * 1000 / bookings, 3),
        "queries": timed["queries"],
    }
