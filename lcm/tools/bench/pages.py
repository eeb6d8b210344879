"""`manage.py bench_pages [--pages 100]`: N open live pages polling every second against the production web
process (gunicorn, 2 workers, as `lcm.tools.stack` starts it) with 1,000 sessions in PostgreSQL.

The pages are split between the dashboard, session detail pages (each its own session) and one exam's roster;
each is one client thread that loads the page, then polls its `live` fragment every second like htmx (the
next poll due one second after the last was due; a late answer delays it). The window opens after `--warmup`
seconds and once every page had a few polls answered (at most 90 s more). Measured per mode, in the same run,
one gunicorn started per mode on the same data:

    digest      today's render-and-digest poll (`LCM_LIVE_DIGEST_ONLY=1`): every poll renders
    stamp       the change-stamp poll (`lcm.live`), re-rendering each page every LCM_LIVE_REFRESH_SECONDS
    unchanged   the change-stamp poll with no refresh in the window: what an unchanged poll costs

Printed per mode: polls/s served against polls/s asked, p50/p95 latency, renders (200s), the web
processes' CPU per poll. The fixtures (sessions, workers, an exam, the benchmark user) are deleted at the end.
"""

import os
import re
import statistics
import tempfile
import threading
import time
import uuid
from datetime import timedelta

import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from lcm.tools.bench import BenchRun
from lcm.tools.bench.fixtures import percentile, quiet_logs, remove_fixtures, seed_definitions, seed_sessions
from lcm.tools.processes import database_url_of, flush_redis_db
from lcm.tools.stack import Stack, StackConfig, StackError
from sessions.models import Exam, LabletSession
from workers.models import CMLWorker

ACTOR = "bench_pages"
PASSWORD = "bench-pages-" + uuid.uuid4().hex  # noqa: S105 - a throwaway user deleted at the end
MODES = {
    "digest": {"LCM_LIVE_DIGEST_ONLY": "1"},
    "stamp": {"LCM_LIVE_DIGEST_ONLY": "0"},
    "unchanged": {"LCM_LIVE_DIGEST_ONLY": "0", "LCM_LIVE_REFRESH_SECONDS": "3600"},
}
STATUSES = ["PENDING", "SCHEDULED", "READY", "RUNNING", "GRADING", "ARCHIVED", "TERMINATED"]
POLL_URL = re.compile(r'hx-get="([^"]+)"')
SETTLED_ANSWERS, SETTLE_LIMIT = 4, 90.0


def seed(tag: str, count: int, *, exam_size: int) -> dict:
    """`count` sessions in every state on 4 workers, `exam_size` of them one exam's roster; ids by kind."""
    definition = next(iter(seed_definitions(tag, actor=ACTOR).values()))
    workers = CMLWorker.objects.bulk_create(
        CMLWorker(
            name=f"bench-{tag}-{i}", status="RUNNING", cml_base_url=f"http://127.0.0.1:9/bench/{i}", cpu_cores=512,
            memory_gb=2048, storage_gb=20_000, max_nodes=10_000, port_range_start=2000, port_range_end=9999,
            created_by=ACTOR,
        )
        for i in range(4)
    )  # fmt: skip
    now = timezone.now()
    exam = Exam.objects.create(
        name=f"bench-{tag}", definition=definition, timeslot_start=now, timeslot_end=now + timedelta(hours=2)
    )
    rows = []
    for index in range(count):
        status = STATUSES[index % len(STATUSES)]
        rows.append(
            {
                "definition": definition,
                "status": status,
                "worker": None if status == "PENDING" else workers[index % len(workers)],
                "timeslot_start": now - timedelta(minutes=30),
                "timeslot_end": now + timedelta(hours=2),
                "exam": exam if index < exam_size else None,
            }
        )
    ids = seed_sessions(tag, rows, actor=ACTOR)
    running = [pk for pk, row in zip(ids, rows, strict=True) if row["status"] == "RUNNING" and not row["exam"]]
    return {"exam": exam.pk, "sessions": running}


def page_urls(pages: int, kinds: dict) -> list[str]:
    """`pages` URLs, a third each: the dashboard, distinct session pages, the exam's roster."""
    urls = []
    for index in range(pages):
        kind = index % 3
        if kind == 0:
            urls.append("/")
        elif kind == 1:
            urls.append(f"/sessions/{kinds['sessions'][index % len(kinds['sessions'])]}/")
        else:
            urls.append(f"/exams/{kinds['exam']}/")
    return urls


def login(base: str, username: str) -> requests.cookies.RequestsCookieJar:
    http = requests.Session()
    page = http.get(f"{base}/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    answer = http.post(
        f"{base}/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=10,
        allow_redirects=False,
    )
    if answer.status_code != 302:
        raise CommandError(f"the benchmark user could not sign in ({answer.status_code})")
    return http.cookies


class Poller(threading.Thread):
    """One open page: load it, then poll its live fragment every second until `stop` is set."""

    def __init__(self, base: str, url: str, cookies, stop: threading.Event, window: list):
        super().__init__(daemon=True)
        self.base, self.url, self.stop, self.window = base, url, stop, window
        self.http = requests.Session()
        self.http.cookies.update(cookies)
        self.samples: list[tuple[float, float, int]] = []  # (sent at, seconds, status)
        self.errors = 0

    def _poll_url(self, html: str) -> str | None:
        found = POLL_URL.search(html)
        return found.group(1).replace("&amp;", "&") if found else None

    def run(self):
        poll = self._poll_url(self.http.get(self.base + self.url, timeout=30).text)
        due = time.monotonic() + (hash(self.url + str(id(self))) % 1000) / 1000
        while poll and not self.stop.is_set():
            time.sleep(max(0.0, due - time.monotonic()))
            sent = time.monotonic()
            try:
                answer = self.http.get(self.base + poll, headers={"HX-Request": "true"}, timeout=30)
            except requests.RequestException:
                self.errors += 1
                answer = None
            took = time.monotonic() - sent
            if answer is not None:
                self.samples.append((sent, took, answer.status_code))
                if answer.status_code == 200:
                    poll = self._poll_url(answer.text) or poll
            due = max(due + 1.0, time.monotonic())


def _settle(pollers: list, *, answers: int, limit: float) -> None:
    """Wait (at most `limit` seconds) until every page had `answers` polls answered: each gunicorn worker has then
    most likely rendered it once, so the window measures steady polling, not the first renders of a loaded machine."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and any(len(p.samples) < answers for p in pollers):
        time.sleep(0.2)


class PagesBench(BenchRun):
    def run(self, options) -> None:
        pages, duration = options["pages"], options["seconds"]
        tag = f"pages-{os.getpid()}"
        user_model = get_user_model()
        username = f"bench-{tag}"
        with quiet_logs():
            kinds = seed(tag, options["sessions"], exam_size=options["exam_size"])
            user = user_model.objects.create_superuser(username, f"{username}@example.com", PASSWORD)
            # The web process's hasher, whatever this process uses (the tests' is a fast one gunicorn lacks).
            user.password = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
            user.save(update_fields=["password"])
        self.stderr.write(f"seeded {LabletSession.objects.count()} sessions; {pages} pages for {duration}s per mode")
        try:
            results = {mode: self._mode(mode, options, kinds, username, first=i == 0) for i, mode in enumerate(MODES)}
        finally:
            with quiet_logs():
                LabletSession.objects.filter(exam__name=f"bench-{tag}").delete()  # they protect the exam
                Exam.objects.filter(name=f"bench-{tag}").delete()  # it protects the definition
                remove_fixtures(tag)
                user.delete()
        if options.get("json"):
            self.write_json(results)
        else:
            self._print(results, pages)

    def _mode(self, mode: str, options, kinds: dict, username: str, *, first: bool) -> dict:
        broker_url = f"redis://127.0.0.1:6379/{options['redis_db']}"
        flush_redis_db(broker_url)
        config = StackConfig.on_free_ports(
            state_dir=tempfile.mkdtemp(prefix=f"lcm-bench-pages-{mode}-"),
            database_url=database_url_of(connection.settings_dict),
            broker_url=broker_url,
            services=("web",),
            migrate=first,
            collectstatic=first,
            env=MODES[mode],
        )
        stack = Stack(config, die_with_parent=True)
        try:
            stack.start()
        except StackError as exc:
            raise CommandError(str(exc)) from None
        try:
            return self._measure(stack, options, kinds, username)
        finally:
            stack.stop()

    def _measure(self, stack: Stack, options, kinds: dict, username: str) -> dict:
        base = stack.urls["web"]
        cookies = login(base, username)
        stop, window = threading.Event(), []
        pollers = [Poller(base, url, cookies, stop, window) for url in page_urls(options["pages"], kinds)]
        for poller in pollers:
            poller.start()
        time.sleep(options["warmup"])
        _settle(pollers, answers=SETTLED_ANSWERS, limit=SETTLE_LIMIT)
        begin, cpu_begin = time.monotonic(), stack.cpu_seconds("web")
        time.sleep(options["seconds"])
        end, cpu = time.monotonic(), stack.cpu_seconds("web") - cpu_begin
        stop.set()
        for poller in pollers:
            poller.join(timeout=35)
        samples = [s for p in pollers for s in p.samples if begin <= s[0] < end]
        latencies = sorted(s[1] * 1000 for s in samples)
        served = len(samples)
        return {
            "pages": len(pollers),
            "polls_per_s": served / (end - begin),
            "p50_ms": statistics.median(latencies) if latencies else 0.0,
            "p95_ms": percentile(latencies, 95) if latencies else 0.0,
            "renders": sum(1 for s in samples if s[2] == 200),
            "unchanged": sum(1 for s in samples if s[2] == 204),
            "errors": sum(p.errors for p in pollers) + sum(1 for s in samples if s[2] not in (200, 204)),
            "cpu_ms_per_poll": cpu * 1000 / served if served else 0.0,
            "web_cores": cpu / (end - begin),
        }

    def _print(self, results: dict, pages: int) -> None:
        self.stdout.write(f"bench_pages: {pages} open pages polling 1/s (asked {pages:.0f} polls/s)")
        header = f"{'mode':<10} {'polls/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'200s':>6} {'204s':>6} {'errors':>6}"
        self.stdout.write(header + f" {'CPU ms/poll':>11} {'web cores':>9}")
        for mode, r in results.items():
            self.stdout.write(
                f"{mode:<10} {r['polls_per_s']:>8.1f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['renders']:>6} "
                f"{r['unchanged']:>6} {r['errors']:>6} {r['cpu_ms_per_poll']:>11.2f} {r['web_cores']:>9.2f}"
            )
        self.stdout.write("targets: every poll served (polls/s = pages), p95 <= 50 ms, <= 2 ms CPU per unchanged poll")
