"""`manage.py bench_reconcile [--sessions 10000]`: the lablet loop's tick and passes, and watch latency (SPEC §6.3).

1. The tick (`sessions.reconcilers.sessions_needing_work`, what the lablets loop runs on each
   beat) over a small and a large population of sessions: queries per tick (they must not grow
   with the number of sessions), microseconds per tick and per session. Most sessions are idle
   (waiting for a start, a candidate or the end of their timeslot, or finished); about 1% have
   something to do now, and the tick must return exactly those.
2. One reconcile pass (`lcm.reconcile.run` of `reconcile_session`, what a Celery task or the
   in-process pool runs) for idle and for changed sessions: queries and microseconds each. The
   changed ones take steps that need only the database (PENDING/READY past their end → EXPIRED,
   RUNNING at its end → STOPPING, SCHEDULED on a draining worker → PENDING). The peer of the tick
   is a tick without the filter: one such pass for every non-terminal session.
3. etcd change → reconcile start: a real etcd (started here on free ports in a temporary
   directory), `EtcdCoordinator.watch_prefix` as `manage.py lcm_watch` uses it, latency from
   the projection's write (`put_if_changed`) to the watcher's callback, where `lcm_watch` calls
   `loops.enqueue`. The peer is the polling interval: without the watcher, a change waits for
   the next tick. Skipped, with a note, when etcd is not installed.

Parts 1 and 2 run inside a transaction that is rolled back (nothing they write survives, and
no after-commit listener ever sees it); the tables are vacuumed before and after each size, so
that no run measures the dead rows of an earlier one. Part 3 only writes to its own throwaway etcd.
"""

import os
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from lcm import reconcile
from lcm.coordination import PREFIX, EtcdCoordinator, session_status_key
from lcm.management.command_utils import fail
from lcm.tools.bench import BenchRun, fixtures, packing
from sessions.management.commands.lcm_watch import SESSION_KEY
from sessions.reconcilers import reconcile_session, record_failure, sessions_needing_work
from sessions.states import TERMINAL, SessionStatus

S = SessionStatus
TARGET_QUERIES = 10
TARGET_IDLE_US = 50.0
TARGET_WATCH_P95_MS = 20.0
# Idle sessions, in equal shares: (status, start offset, end offset in minutes from now, extra fields).
IDLE = (
    (S.PENDING, 120, 180, {}),  # books ahead, outside the placement lead
    (S.SCHEDULED, 180, 240, {"worker": "running"}),  # placed, boot lead not reached
    (S.READY, -10, 50, {"worker": "running"}),  # waiting for the candidate
    (S.RUNNING, -10, 50, {"worker": "running"}),  # the candidate is working
    (S.ARCHIVED, -180, -120, {"worker": "running"}),
    (S.TERMINATED, -180, -120, {"cleanup_pending": False}),
    (S.EXPIRED, -180, -120, {"cleanup_pending": False}),
)
# Sessions with something to do now that needs only the database, in equal shares.
CHANGED = (
    (S.PENDING, -120, -60, {}),  # → EXPIRED
    (S.READY, -70, -10, {"worker": "running"}),  # → EXPIRED
    (S.RUNNING, -70, -10, {"worker": "running"}),  # → STOPPING (no grading)
    (S.SCHEDULED, 180, 240, {"worker": "draining"}),  # → PENDING
)


class _Rollback(Exception):
    """Raised at the end of a part so that everything it wrote is rolled back."""


class ReconcileBench(BenchRun):
    """One run of `bench_reconcile`: both sizes, the watch, then the figures as text or JSON."""

    def run(self, options) -> None:
        if not 10 <= options["sessions"] <= 1_000_000:
            raise fail("--sessions must be between 10 and 1000000")
        if not 10 <= options["small"] <= options["sessions"]:
            raise fail("--small must be between 10 and --sessions")
        for name in ("repeat", "passes", "samples"):
            if not 1 <= options[name] <= 100_000:
                raise fail(f"--{name} must be between 1 and 100000")
        interval = float(settings.LCM_LOOP_LABLETS_SECONDS)
        result = {
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "targets": {
                "queries_per_tick": TARGET_QUERIES,
                "us_per_idle_session": TARGET_IDLE_US,
                "watch_p95_ms": TARGET_WATCH_P95_MS,
            },
            "sizes": [],
        }
        with fixtures.listeners_off(), fixtures.quiet_logs():
            result["vacuumed"] = fixtures.vacuum()
            for size in sorted({options["small"], options["sessions"]}):
                result["sizes"].append(self._size(size, options))
                fixtures.vacuum()  # the rolled-back rows are dead rows the next size would otherwise scan
            result["watch"] = self._watch(options["samples"])
        large = result["sizes"][-1]
        tick_s = large["tick"]["us_median"] / 1e6
        result["polling_peer"] = {
            "interval_s": interval,
            "p50_ms": round((interval / 2 + tick_s) * 1000, 1),
            "p95_ms": round((interval * 0.95 + tick_s) * 1000, 1),
        }
        result["targets_met"] = self._verdicts(result)
        if options["json"]:
            self.write_json(result)
        else:
            self._print(result)

    # --- the database parts, rolled back --------------------------------------------------

    def _size(self, size: int, options) -> dict:
        result: dict = {}
        try:
            with transaction.atomic():
                result = self._measure(size, options)
                raise _Rollback
        except _Rollback:
            pass
        return result

    def _seed(self, size: int) -> tuple[list, list, int]:
        """Insert `size` sessions; returns the non-terminal idle ones, the changed ones and their count."""
        tag = uuid.uuid4().hex[:8]
        definition = fixtures.seed_definitions(tag, actor=self.actor)["lab-medium"]
        capacity = packing.fleet_capacities(1)[0]
        running = fixtures.seed_workers(tag, [capacity] * 20, actor=self.actor)
        draining = fixtures.seed_workers(f"{tag}-d", [capacity], actor=self.actor, status="DRAINING")
        changed_count = max(len(CHANGED), size // 100)
        now = timezone.now()

        def rows(kinds, count):
            made = []
            for index in range(count):
                status, start, end, extra = kinds[index % len(kinds)]
                fields = {
                    "definition": definition,
                    "status": status,
                    "timeslot_start": now + timedelta(minutes=start, milliseconds=index),
                    "timeslot_end": now + timedelta(minutes=end, milliseconds=index),
                }
                for key, value in extra.items():
                    if key == "worker":
                        fields["worker"] = draining[0] if value == "draining" else running[index % len(running)]
                    else:
                        fields[key] = value
                made.append(fields)
            return made

        idle_rows = rows(IDLE, size - changed_count)
        idle = fixtures.seed_sessions(tag, idle_rows, actor=self.actor)
        changed = fixtures.seed_sessions(f"{tag}-c", rows(CHANGED, changed_count), actor=self.actor)
        fixtures.analyze()
        active = [pk for pk, row in zip(idle, idle_rows, strict=True) if row["status"] not in TERMINAL]
        return active, changed, changed_count

    def _measure(self, size: int, options) -> dict:
        active_idle, changed, changed_count = self._seed(size)
        for _ in range(2):  # warm-up: plans and caches
            sessions_needing_work()
        timings, queries, returned = [], set(), None
        for _ in range(options["repeat"]):
            with CaptureQueriesContext(connection) as captured:
                began = time.perf_counter()
                keys = sessions_needing_work()
                timings.append(time.perf_counter() - began)
            queries.add(len(captured.captured_queries))
            returned = keys
        exact = set(returned or []) == set(changed)
        median = fixtures.percentile(timings, 50)
        tick = {
            "queries": sorted(queries),
            "us_median": round(median * 1e6),
            "us_p95": round(fixtures.percentile(timings, 95) * 1e6),
            "us_per_session": round(median * 1e6 / size, 3),
            "us_per_idle_session": round(median * 1e6 / size, 3),
            "keys_returned": len(returned or []),
            "exactly_the_changed": exact,
        }
        idle_passes = self._passes(active_idle[: options["passes"]])
        changed_passes = self._passes(changed)
        return {
            "sessions": size,
            "idle": size - changed_count,
            "changed": changed_count,
            "tick": tick,
            "idle_pass": idle_passes,
            "changed_pass": changed_passes,
            "active_idle": len(active_idle),
            # The peer: a tick without the filter gives every non-terminal session a pass.
            "peer_tick_ms": round(idle_passes["us_mean"] * len(active_idle) / 1000, 1),
        }

    def _passes(self, keys) -> dict:
        timings, queries, actions = [], [], {}
        for key in keys:
            with CaptureQueriesContext(connection) as captured:
                began = time.perf_counter()
                result = reconcile.run("lablets", key, reconcile_session, record_failure)
                timings.append(time.perf_counter() - began)
            queries.append(len(captured.captured_queries))
            actions[result.action] = actions.get(result.action, 0) + 1
        if not timings:
            return {"count": 0, "us_mean": 0, "us_p95": 0, "queries_mean": 0, "actions": {}}
        return {
            "count": len(timings),
            "us_mean": round(sum(timings) / len(timings) * 1e6),
            "us_p95": round(fixtures.percentile(timings, 95) * 1e6),
            "queries_mean": round(sum(queries) / len(queries), 1),
            "queries_max": max(queries),
            "actions": dict(sorted(actions.items())),
        }

    # --- etcd ------------------------------------------------------------------------------

    def _watch(self, samples: int) -> dict:
        if fixtures.etcd_binary() is None:
            return {"skipped": "etcd is not installed (Debian package etcd-server): watch latency not measured"}
        # While etcd starts, the readiness probe's failures would each log a warning.
        ready = fixtures.quiet_logs("lcm.coordination", "ERROR")
        try:
            with ready, fixtures.start_etcd(lambda url: EtcdCoordinator(url, timeout=0.5).healthy()) as url:
                return self._watch_on(url, samples)
        except RuntimeError as exc:
            return {"skipped": f"{exc}: watch latency not measured"}

    def _watch_on(self, url: str, samples: int) -> dict:
        coordinator = EtcdCoordinator(url)
        seen: dict[str, float] = {}
        arrived: dict[str, threading.Event] = {}
        lock = threading.Lock()

        def on_change(kind, key, value):
            # What `lcm_watch` does on a change, up to the point where it calls `loops.enqueue`.
            match = SESSION_KEY.match(key)
            if match and kind == "put":
                at = time.perf_counter()
                with lock:
                    seen.setdefault(match.group(1), at)
                    event = arrived.get(match.group(1))
                if event is not None:
                    event.set()

        cancel = coordinator.watch_prefix(f"{PREFIX}/sessions/", on_change)
        latencies, writes, lost = [], [], 0
        try:
            for index in range(samples + 10):
                session_id = str(uuid.uuid4())
                event = threading.Event()
                with lock:
                    arrived[session_id] = event
                began = time.perf_counter()
                coordinator.put_if_changed(session_status_key(session_id), "SCHEDULED")
                wrote = time.perf_counter()
                if not event.wait(2.0):
                    lost += 1
                    continue
                if index >= 10:  # the first changes warm the connection and the watch stream
                    latencies.append(seen[session_id] - began)
                    writes.append(wrote - began)
                time.sleep(0.002)
        finally:
            cancel()
            close = getattr(coordinator.client, "close", None)
            if close is not None:
                close()
        return {
            "etcd": url,
            "samples": len(latencies),
            "lost": lost,
            "p50_ms": round(fixtures.percentile(latencies, 50) * 1000, 2),
            "p95_ms": round(fixtures.percentile(latencies, 95) * 1000, 2),
            "p99_ms": round(fixtures.percentile(latencies, 99) * 1000, 2),
            "max_ms": round(max(latencies, default=0) * 1000, 2),
            "write_p50_ms": round(fixtures.percentile(writes, 50) * 1000, 2),
        }

    # --- output ------------------------------------------------------------------------

    def _verdicts(self, r: dict) -> dict:
        sizes = r["sizes"]
        queries = [tuple(s["tick"]["queries"]) for s in sizes]
        verdicts = {
            "queries_per_tick_constant": len(set(queries)) == 1 and len(queries[0]) == 1,
            "queries_per_tick_at_most_10": all(max(q) <= TARGET_QUERIES for q in queries),
            "us_per_idle_session": all(s["tick"]["us_per_idle_session"] <= TARGET_IDLE_US for s in sizes),
            "tick_returns_exactly_the_changed": all(s["tick"]["exactly_the_changed"] for s in sizes),
        }
        watch = r.get("watch", {})
        if "p95_ms" in watch:
            verdicts["watch_p95"] = watch["p95_ms"] <= TARGET_WATCH_P95_MS and not watch["lost"]
        return verdicts

    def _print(self, r: dict) -> None:
        w = self.stdout.write
        w("bench_reconcile: the lablets loop (tick: sessions_needing_work; pass: reconcile_session, lcm.reconcile)")
        w(f"machine: {r['cpus']} CPUs, load average {' '.join(map(str, r['load_average']))} at the start")
        w("")
        w("1. tick")
        w(
            f"{'sessions':>9}{'idle':>8}{'changed':>9}{'queries':>9}{'µs/tick':>10}{'p95':>9}{'µs/session':>12}"
            f"{'returned':>10}  exactly the changed   peer: a pass for every session"
        )
        for s in r["sizes"]:
            t = s["tick"]
            w(
                f"{s['sessions']:>9,}{s['idle']:>8,}{s['changed']:>9,}{'/'.join(map(str, t['queries'])):>9}"
                f"{t['us_median']:>10,}{t['us_p95']:>9,}{t['us_per_session']:>12.3f}{t['keys_returned']:>10}  "
                f"{'yes' if t['exactly_the_changed'] else 'NO':<22}{s['peer_tick_ms']:>10,.1f} ms"
            )
        w("")
        w("2. one reconcile pass")
        w(f"{'sessions':>9}  {'kind':<9}{'passes':>8}{'queries':>9}{'µs mean':>10}{'µs p95':>9}  actions")
        for s in r["sizes"]:
            for kind in ("idle", "changed"):
                p = s[f"{kind}_pass"]
                actions = ", ".join(f"{k} {v}" for k, v in p["actions"].items())
                w(
                    f"{s['sessions']:>9,}  {kind:<9}{p['count']:>8}{p['queries_mean']:>9}{p['us_mean']:>10,}"
                    f"{p['us_p95']:>9,}  {actions}"
                )
        w(
            "idle passes are on non-terminal idle sessions; an idle session costs only its share of the tick "
            "(µs/session above): the tick leaves it out. The peer tick gives each of them a pass."
        )
        w("")
        watch, peer = r.get("watch", {}), r["polling_peer"]
        w("3. etcd change → reconcile start (put_if_changed → watch callback, where lcm_watch enqueues)")
        if "skipped" in watch:
            w(f"skipped: {watch['skipped']}")
        else:
            w(
                f"watch: p50 {watch['p50_ms']} ms, p95 {watch['p95_ms']} ms, p99 {watch['p99_ms']} ms, "
                f"max {watch['max_ms']} ms over {watch['samples']} changes ({watch['lost']} lost; "
                f"the write itself p50 {watch['write_p50_ms']} ms)"
            )
        w(
            f"peer, polling every {peer['interval_s']:g} s (LCM_LOOP_LABLETS_SECONDS): p50 {peer['p50_ms']:,} ms, "
            f"p95 {peer['p95_ms']:,} ms (a change waits for the next tick, then the tick runs)"
        )
        w("")
        verdicts = ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in r["targets_met"].items())
        w(
            f"targets (queries/tick identical and ≤ {TARGET_QUERIES}, ≤ {TARGET_IDLE_US:g} µs per idle session, "
            f"watch p95 ≤ {TARGET_WATCH_P95_MS:g} ms): {verdicts}"
        )
