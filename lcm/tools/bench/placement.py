"""`manage.py bench_placement [--sessions 10000 --workers 500]`: placement speed and packing (SPEC §6.3).

Three parts, each printed beside its peers measured in the same run:
1. In memory, all sessions at once: decisions per second of the placement core as the scheduler
   runs it (`scheduling.placement.Fleet`, capacities held in memory), and workers used against
   the lower bound (per dimension, the fewest workers of this fleet whose capacity covers the
   demand). Peers: naive first fit, spreading (least loaded), and the previous score (fullest
   *after* placing).
2. In memory, sessions arriving and leaving over a day (a timeline of arrivals and departures
   that free capacity): workers in use at the peak against the lower bound at the peak, and
   worker-hours against lower-bound hours while sessions both arrive and leave. Same peers.
3. PostgreSQL: the scheduler's tick body (`place_sessions`: one capacity query, the batch
   decided in memory, one `sessions_schedule_batch` commit per tick of 500) over the same
   sessions and a fleet of real rows: committed placements per second and queries per tick,
   then checks (no worker over capacity, one history row per placement). Peer: the same
   decisions committed one `session_transition(→ SCHEDULED)` each (the previous scheduler).

The fleet mixes the ENTERPRISE templates' shapes (`scheduling.packing.FLEET_MIX`), the sessions
three lab shapes (`SESSION_MIX`). Rows are created under a unique `bench-<tag>-` prefix and
deleted at the end, even on failure or Ctrl-C, and the tables are vacuumed before and after (no
run measures another's dead rows); the after-commit listeners (etcd projection, reconcile
enqueueing) are detached meanwhile so that nothing else reacts to them, and INFO logging of
each change is switched off.
"""

import os
import time
import uuid
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from lcm.management.command_utils import fail
from lcm.tools.bench import BenchRun, fixtures, packing
from scheduling.placement import Fleet
from scheduling.scheduler import decide, eligible_sessions, place_sessions
from scheduling.selectors import reusable_labs_by_definition, worker_capacities
from sessions.models import LabletSession, SessionStatusChange
from sessions.services import session_transition
from sessions.states import SessionStatus

TARGET_DECISIONS = 5000
TARGET_COMMITTED = 2000
TARGET_RATIO = 1.07
# The placement core, then its peers.
POLICIES = (packing.BestFit, *packing.PEERS)


def _figures(run, **more) -> dict:
    """What every in-memory run reports (its policy, speed and placements), then `more`."""
    return {"policy": run.policy, "decisions_per_second": round(run.rate), "placed": run.placed, **more}


def _batch_figures(run: packing.BatchRun) -> dict:
    return _figures(
        run,
        workers_used=run.workers_used,
        lower_bound=run.lower_bound,
        lower_bound_by_dimension=run.bound_by_dimension,
        ratio=round(run.ratio, 3),
    )


def _timeline_figures(run: packing.TimelineRun) -> dict:
    return _figures(
        run,
        peak_workers_used=run.peak_used,
        peak_lower_bound=run.peak_bound,
        peak_lower_bound_by_dimension=run.peak_bound_by_dimension,
        peak_ratio=round(run.peak_ratio, 3),
        steady_hours_ratio=round(run.steady_ratio, 3),
        day_hours_ratio=round(run.hours_ratio, 3),
    )


class PlacementBench(BenchRun):
    """One run of `bench_placement`: the three parts, then the figures as text or JSON."""

    def run(self, options) -> None:
        if not 1 <= options["sessions"] <= 1_000_000:
            raise fail("--sessions must be between 1 and 1000000")
        if not 1 <= options["workers"] <= 100_000:
            raise fail("--workers must be between 1 and 100000")
        if not 0.1 <= options["hours"] <= 24 * 30:
            raise fail("--hours must be between 0.1 and 720")
        if not 1 <= options["tick"] <= 10_000:
            raise fail("--tick must be between 1 and 10000")
        if not 0 <= options["peer_sessions"] <= 100_000:
            raise fail("--peer-sessions must be between 0 and 100000")
        capacities = packing.fleet_capacities(options["workers"], options["seed"])
        kinds = packing.session_kinds(options["sessions"], options["seed"])
        bound = packing.LowerBound(capacities)
        shapes = packing.fleet_shapes(options["workers"], options["seed"])
        result = {
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "sessions": options["sessions"],
            "workers": options["workers"],
            "fleet": {name: shapes.count(name) for name, *_ in packing.FLEET_MIX},
            "targets": {
                "decisions_per_second": TARGET_DECISIONS,
                "committed_per_second": TARGET_COMMITTED,
                "workers_over_bound": TARGET_RATIO,
            },
            "batch": self._batch(capacities, [packing.DEMANDS[k] for k in kinds], bound),
            "timeline": self._timeline(capacities, options, bound),
        }
        if not options["memory_only"]:
            result["database"] = self._database(capacities, kinds, options)
        result["targets_met"] = self._verdicts(result)
        if options["json"]:
            self.write_json(result)
        else:
            self._print(result)

    # --- in memory ---------------------------------------------------------------------------

    def _batch(self, capacities, demands, bound) -> list[dict]:
        return [_batch_figures(packing.run_batch(policy(capacities), demands, bound)) for policy in POLICIES]

    def _timeline(self, capacities, options, bound) -> dict:
        bookings = packing.timeline(options["sessions"], options["hours"], options["seed"])
        runs = [_timeline_figures(packing.run_timeline(policy(capacities), bookings, bound)) for policy in POLICIES]
        return {"hours": options["hours"], "durations_minutes": list(packing.DURATIONS), "runs": runs}

    # --- PostgreSQL ------------------------------------------------------------------------

    def _database(self, capacities, kinds, options) -> dict:
        tag = uuid.uuid4().hex[:8]
        fixtures.vacuum()
        try:
            with fixtures.listeners_off(), fixtures.quiet_logs():
                return self._database_run(tag, capacities, kinds, options)
        finally:
            with fixtures.listeners_off():
                fixtures.remove_fixtures(tag)
            fixtures.vacuum()

    def _database_run(self, tag, capacities, kinds, options) -> dict:
        definitions = fixtures.seed_definitions(tag, actor=self.actor)
        workers = fixtures.seed_workers(tag, capacities, actor=self.actor)
        worker_ids = [w.pk for w in workers]
        start = timezone.now() - timedelta(minutes=1)

        def bookings(count: int, offset: int) -> list[dict]:
            # ASAP bookings (due whatever the placement lead), with distinct starts in booking order so that
            # the scheduler places them in the order decided in memory.
            return [
                {
                    "definition": definitions[kinds[(offset + i) % len(kinds)]],
                    "timeslot_start": start + timedelta(milliseconds=offset + i),
                    "timeslot_end": start + timedelta(milliseconds=offset + i, minutes=60),
                }
                for i in range(count)
            ]

        main_ids = fixtures.seed_sessions(tag, bookings(options["sessions"], 0), actor=self.actor)
        fixtures.analyze()
        ticks, queries = [], []
        placed = conflicts = 0
        clock = fixtures.CpuClock()
        cpu_began = clock.read()
        began = time.perf_counter()
        while True:
            tick_began = time.perf_counter()
            with CaptureQueriesContext(connection) as captured:
                batch = eligible_sessions(limit=options["tick"], definitions=list(definitions.values()))
                if not batch:
                    break
                report = place_sessions(batch, worker_ids=worker_ids)
            ticks.append(time.perf_counter() - tick_began)
            queries.append(len(captured.captured_queries))
            placed += len(report.placed)
            conflicts += report.conflicts
            if not report.placed:
                break  # the rest does not fit
        seconds = time.perf_counter() - began
        cpu = fixtures.CpuClock.spent(cpu_began, clock.read())
        database = {
            "ticks": len(ticks),
            "sessions_per_tick": options["tick"],
            "placed": placed,
            "conflicts": conflicts,
            "seconds": round(seconds, 3),
            "committed_per_second": round(placed / seconds) if seconds else 0,
            "tick_ms_p50": round(fixtures.percentile(ticks, 50) * 1000, 1),
            "tick_ms_max": round(max(ticks, default=0) * 1000, 1),
            "queries_per_tick": sorted(set(queries)),
            "cpu": cpu | self._per_cpu_second(placed, cpu),
            "checks": self._checks(main_ids, worker_ids, placed),
        }
        database["peer"] = self._peer(tag, bookings, worker_ids, options, definitions)
        return database

    @staticmethod
    def _per_cpu_second(placed: int, cpu: dict) -> dict:
        """Placements per CPU-second of this process plus its PostgreSQL backend: what one uncontended core
        would sustain, whatever else the machine is doing."""
        total = cpu["process_s"] + (cpu["postgres_s"] or 0)
        return {
            "ms_per_placement": round(total * 1000 / placed, 3) if placed else None,
            "placements_per_cpu_second": round(placed / total) if total else None,
            "includes_postgres": cpu["postgres_s"] is not None,
        }

    def _checks(self, session_ids, worker_ids, placed: int) -> dict:
        scheduled = LabletSession.objects.filter(pk__in=session_ids, status=SessionStatus.SCHEDULED)
        used = scheduled.values("worker").distinct().count()
        over = [
            c.name
            for c in worker_capacities(worker_ids).values()
            if c.cpu_free < 0 or c.memory_free < 0 or c.storage_free < 0 or c.nodes_free < 0 or c.ports_free < 0
        ]
        history = SessionStatusChange.objects.filter(session_id__in=session_ids, to_status=SessionStatus.SCHEDULED)
        return {
            "scheduled_rows": scheduled.count(),
            "history_rows": history.count(),
            "history_matches": history.count() == placed == scheduled.count(),
            "workers_used": used,
            "workers_over_capacity": over,
        }

    def _peer(self, tag, bookings, worker_ids, options, definitions) -> dict:
        """The same decisions committed one `session_transition(→ SCHEDULED)` at a time."""
        count = options["peer_sessions"]
        if not count:
            return {}
        peer_ids = fixtures.seed_sessions(f"{tag}-peer", bookings(count, options["sessions"]), actor=self.actor)
        sessions = list(LabletSession.objects.select_related("definition").filter(pk__in=peer_ids))
        sessions.sort(key=lambda s: s.timeslot_start)
        placed = 0
        clock = fixtures.CpuClock()
        cpu_began = clock.read()
        began = time.perf_counter()
        with CaptureQueriesContext(connection) as captured:
            fleet = Fleet(worker_capacities(worker_ids).values())
            reusable = reusable_labs_by_definition(definitions.values())
            assignments, _ = decide(sessions, fleet, reusable)
            for session, chosen, _ in assignments:
                session_transition(
                    session,
                    SessionStatus.SCHEDULED,
                    actor=self.actor,
                    reason=f"placed on {chosen.name} (fill {chosen.score})",
                    expected_status=SessionStatus.PENDING,
                    worker=chosen.worker_id,
                )
                placed += 1
        seconds = time.perf_counter() - began
        cpu = fixtures.CpuClock.spent(cpu_began, clock.read())
        return {
            "placed": placed,
            "seconds": round(seconds, 3),
            "committed_per_second": round(placed / seconds) if seconds else 0,
            "queries_per_placement": round(len(captured.captured_queries) / placed, 1) if placed else 0,
            "cpu": cpu | self._per_cpu_second(placed, cpu),
        }

    # --- output ------------------------------------------------------------------------

    @staticmethod
    def _cpu_rate(cpu: dict) -> str:
        rate = cpu.get("placements_per_cpu_second")
        return f"{rate:,}" if rate else "-"

    def _verdicts(self, r: dict) -> dict:
        ours = r["batch"][0]
        line = r["timeline"]["runs"][0]
        verdicts = {
            "decisions_per_second": ours["decisions_per_second"] >= TARGET_DECISIONS,
            "workers_used_batch": ours["ratio"] <= TARGET_RATIO,
            "workers_used_peak": line["peak_ratio"] <= TARGET_RATIO,
            "workers_used_steady_hours": line["steady_hours_ratio"] <= TARGET_RATIO,
        }
        if "database" in r:
            database = r["database"]
            verdicts["committed_per_second"] = database["committed_per_second"] >= TARGET_COMMITTED
            verdicts["no_overbooking"] = not database["checks"]["workers_over_capacity"]
            verdicts["history_rows"] = database["checks"]["history_matches"]
        return verdicts

    def _print(self, r: dict) -> None:
        w = self.stdout.write
        fleet = ", ".join(f"{n} × {name}" for name, n in r["fleet"].items())
        shapes = ", ".join(
            f"{name} {d.cpu_cores} CPU/{d.memory_gb} GB/{d.storage_gb} GB/{d.node_count} nodes ({share:.0%})"
            for name, d, share in packing.SESSION_MIX
        )
        w(f"bench_placement: {r['sessions']} sessions, {r['workers']} workers ({fleet})")
        w(f"machine: {r['cpus']} CPUs, load average {' '.join(map(str, r['load_average']))} at the start")
        w(f"session shapes: {shapes}")
        w("lower bound: per dimension, the fewest workers of this fleet whose capacity covers the demand")
        w("")
        w("1. all sessions at once, in memory")
        w(f"{'policy':<36}{'decisions/s':>12}{'placed':>8}{'workers':>9}{'bound':>7}{'ratio':>7}  bound by dimension")
        for run in r["batch"]:
            dims = " ".join(f"{k}={v}" for k, v in run["lower_bound_by_dimension"].items())
            w(
                f"{run['policy']:<36}{run['decisions_per_second']:>12,}{run['placed']:>8}{run['workers_used']:>9}"
                f"{run['lower_bound']:>7}{run['ratio']:>7.3f}  {dims}"
            )
        self._print_timeline(r["timeline"])
        if "database" in r:
            self._print_database(r["database"])
        w("")
        verdicts = ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in r["targets_met"].items())
        w(
            f"targets (≥ {TARGET_DECISIONS:,} decisions/s, ≥ {TARGET_COMMITTED:,} committed/s, "
            f"≤ {TARGET_RATIO} × bound): {verdicts}"
        )

    def _print_timeline(self, line: dict) -> None:
        w = self.stdout.write
        w("")
        w(
            f"2. arriving and leaving: arrivals at random over {line['hours']:g} h, stays of "
            f"{'/'.join(map(str, line['durations_minutes']))} min, in memory"
        )
        w(
            f"{'policy':<36}{'decisions/s':>12}{'placed':>8}{'peak used':>11}{'peak bound':>12}{'ratio':>7}"
            f"{'steady h':>10}{'day h':>8}"
        )
        for run in line["runs"]:
            w(
                f"{run['policy']:<36}{run['decisions_per_second']:>12,}{run['placed']:>8}{run['peak_workers_used']:>11}"
                f"{run['peak_lower_bound']:>12}{run['peak_ratio']:>7.3f}{run['steady_hours_ratio']:>10.3f}"
                f"{run['day_hours_ratio']:>8.3f}"
            )
        dims = " ".join(f"{k}={v}" for k, v in line["runs"][0]["peak_lower_bound_by_dimension"].items())
        w(f"peak bound by dimension: {dims}")
        w(
            "steady h = worker-hours / lower-bound hours from the first departure to the last arrival; day h = the "
            "same over the whole run, including the ramp-down when nothing arrives to refill emptied room"
        )

    def _print_database(self, d: dict) -> None:
        w = self.stdout.write
        checks = d["checks"]
        w("")
        w("3. PostgreSQL: the scheduler tick (capacities in one query, batch decided in memory, one commit)")
        w(f"{'path':<44}{'placed':>8}{'seconds':>9}{'placements/s':>14}{'per CPU-s':>11}  queries")
        w(
            f"{'sessions_schedule_batch, ' + str(d['sessions_per_tick']) + ' per tick':<44}{d['placed']:>8}"
            f"{d['seconds']:>9.2f}{d['committed_per_second']:>14,}{self._cpu_rate(d['cpu']):>11}  "
            f"{'/'.join(map(str, d['queries_per_tick']))} per tick ({d['ticks']} ticks, p50 {d['tick_ms_p50']} ms)"
        )
        peer = d.get("peer") or {}
        if peer:
            w(
                f"{'peer: one session_transition per placement':<44}{peer['placed']:>8}{peer['seconds']:>9.2f}"
                f"{peer['committed_per_second']:>14,}{self._cpu_rate(peer['cpu']):>11}  "
                f"{peer['queries_per_placement']} per placement"
            )
        cpu = d["cpu"]
        backend = cpu["postgres_s"] if cpu["postgres_s"] is not None else "(unreadable)"
        w(
            f"CPU of the tick path: {cpu['process_s']} s in this process + {backend} s in its PostgreSQL backend "
            f"= {cpu['ms_per_placement']} ms per placement (per CPU-s: what one uncontended core sustains)"
        )
        w(
            f"checks: {checks['scheduled_rows']} SCHEDULED rows, {checks['history_rows']} history rows "
            f"({'match' if checks['history_matches'] else 'MISMATCH'}), {checks['workers_used']} workers used, "
            f"over capacity: {', '.join(checks['workers_over_capacity']) or 'none'}; conflicts {d['conflicts']}"
        )
