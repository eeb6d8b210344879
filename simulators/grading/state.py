"""The Grading Engine simulator's state: sessions, parts and grading jobs, the part lifecycle of
EXTERNAL-SYSTEMS.md §4.4 with grading that finishes after `grading_delay`, score reports from the fixture
ruleset, and the CloudEvents of §4.6 (see `simulators.grading.app`)."""

import copy
import html

from flask import Response, jsonify

from simulators.common import iso
from simulators.common_stateful import SimError

CREATED, GRADING, REVIEWING, LOCKED, FAULTED = "created", "grading", "reviewing", "locked", "faulted"

DEFAULT_RULESET = {
    "checksum": "sim-ruleset-1",
    "lab": {"title": "Simulated lab", "version": "1.0"},
    "sections": [
        {
            "index": 1,
            "mode": "auto",
            "description": "Device access",
            "domain": "Operations",
            "points": 60,
            "items": [
                {
                    "id": "1.1",
                    "index": 1,
                    "description": "Console reachable",
                    "domain": "Operations",
                    "fieldTest": False,
                    "points": 30,
                    "webItemType": "lab",
                    "rules": [{"command": "show version", "match": "uptime", "points": 30}],
                },
                {
                    "id": "1.2",
                    "index": 2,
                    "description": "Hostname configured",
                    "domain": "Operations",
                    "fieldTest": False,
                    "points": 30,
                    "webItemType": "lab",
                    "rules": [{"command": "show running-config | include hostname", "match": "hostname", "points": 30}],
                },
            ],
        },
        {
            "index": 2,
            "mode": "auto",
            "description": "Connectivity",
            "domain": "Networking",
            "points": 40,
            "items": [
                {
                    "id": "2.1",
                    "index": 1,
                    "description": "Peers reachable",
                    "domain": "Networking",
                    "fieldTest": False,
                    "points": 40,
                    "webItemType": "lab",
                    "rules": [{"command": "ping 10.0.0.2", "match": "!!!!!", "points": 40}],
                }
            ],
        },
    ],
}
DEFAULT_SCORING = {"version": 1, "rereadScore": 60, "cutScore": 70, "minScore": 0}


class Problem(SimError):
    """A refusal answered as RFC 7807 ProblemDetails (`errors` maps a field to its messages); the control API
    answers it with the common error body."""

    def __init__(self, status: int, title: str, detail: str | None = None, errors: dict | None = None):
        super().__init__(status, detail or title)
        self.title = title
        self.detail = detail
        self.errors = errors

    def response(self) -> Response:
        body = {
            "type": f"https://tools.ietf.org/html/rfc9110#section-15.{5 if self.status < 500 else 6}",
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if self.errors:
            body["errors"] = self.errors
        response = jsonify(body)
        response.status_code = self.status
        return response


class GradingStateMachine:
    """The sessions, grading jobs, scripted outcomes and toolkits of one Grading Engine, mixed into
    `GradingSimulator` (which provides `clock`, `timing()`, `events`, `event_types`, `wakeups`, `random`,
    `fixed_score` and the fixtures). Callers hold the simulator's lock; `actor` is who an audit entry names."""

    sessions: dict[str, dict]
    jobs: dict[tuple[str, str], dict]
    outcomes: list[dict]
    toolkits: dict[str, dict]

    def _now(self) -> str:
        return iso(self.clock.now())

    def _session(self, session_id: str) -> dict:
        session = self.sessions.get(session_id)
        if session is None:
            raise Problem(404, "Not Found", f"no session {session_id}")
        self._progress(session)
        return session

    @staticmethod
    def _part(session: dict, part_id: str) -> dict:
        for part in session["parts"]:
            if part["id"] == part_id:
                return part
        raise Problem(404, "Not Found", f"session {session['id']} has no part {part_id}")

    def _changeable_part(self, session: dict, part_id: str) -> dict:
        part = self._part(session, part_id)
        if part["status"] in (GRADING, LOCKED):
            raise Problem(400, "Bad Request", f"part {part_id} is {part['status']}; its pod cannot change now")
        return part

    def _new_part(self, part_id: str, pod: dict | None, actor: str) -> dict:
        now = self._now()
        part = {
            "id": part_id,
            "createdAt": now,
            "lastModified": now,
            "firstGraded": None,
            "lastSubmitted": None,
            "status": CREATED,
            "statusReason": None,
        }
        if pod is not None:
            part["pod"] = pod
        part["auditTrail"] = []
        self._audit(part, "create", actor)
        return part

    def _audit(self, part: dict, action: str, actor: str) -> None:
        part["auditTrail"].append(
            {
                "action": action,
                "actor": {"id": actor, "name": actor, "email": None},
                "actionable": part["id"],
                "timestamp": self._now(),
            }
        )
        part["lastModified"] = self._now()

    def _touch(self, session: dict) -> None:
        statuses = {part["status"] for part in session["parts"]}
        if FAULTED in statuses:
            session["status"] = FAULTED
        elif GRADING in statuses:
            session["status"] = GRADING
        elif statuses and statuses == {LOCKED}:
            session["status"] = LOCKED
        elif statuses and statuses <= {REVIEWING, LOCKED}:
            session["status"] = REVIEWING
        else:
            session["status"] = CREATED
        session["lastModified"] = self._now()

    # -- grading -----------------------------------------------------------------------------

    def _start_grading(self, session: dict, part: dict, item: tuple[int, int] | None, actor: str) -> None:
        if part["status"] == LOCKED:
            raise Problem(400, "Bad Request", f"part {part['id']} is locked (submitted) and cannot be re-graded")
        if not (part.get("pod") or {}).get("devices"):
            raise Problem(400, "Bad Request", f"part {part['id']} has no pod with devices to collect from")
        if part["status"] == GRADING:
            return  # already running: grading is requested, not restarted
        outcome = self._next_outcome(session["id"], part["id"])
        job = outcome | {"due": self.clock.time() + self.timing("grading_delay"), "item": item}
        self.jobs[(session["id"], part["id"])] = job
        part["status"] = GRADING
        part["statusReason"] = None
        self._audit(part, "grade" if item is None else f"grade item {item[0]}.{item[1]}", actor)
        self._touch(session)
        if job["outcome"] != "hang":
            self.wakeups.at(job["due"], session["id"])

    def _next_outcome(self, session_id: str, part_id: str) -> dict:
        """The scripted outcome for this job (session- or part-specific scripts first), else a score."""
        candidates = sorted(
            (o for o in self.outcomes if o["session_id"] in (None, session_id) and o["part_id"] in (None, part_id)),
            key=lambda o: (o["session_id"] is None, o["part_id"] is None),
        )
        if candidates:
            chosen = candidates[0]
            if chosen["times"] is not None:
                chosen["times"] -= 1
                if chosen["times"] <= 0:
                    self.outcomes.remove(chosen)
            return {"outcome": chosen["outcome"], "score": chosen["score"], "reason": chosen["reason"]}
        return {"outcome": "complete", "score": None, "reason": None}

    def _progress(self, session: dict) -> None:
        """Finish every grading job that is due by now (idempotent)."""
        now = self.clock.time()
        for part in list(session["parts"]):
            key = (session["id"], part["id"])
            job = self.jobs.get(key)
            if job is None or part["status"] != GRADING or job["outcome"] == "hang" or job["due"] > now:
                continue
            del self.jobs[key]
            if job["outcome"] == "fail":
                self._fail(session, part, job["reason"] or "collection failed: device did not answer (simulated)")
            else:
                self._complete(session, part, job)

    def _grading_parts(self, session_id: str, part_id: str | None) -> list[tuple[dict, dict]]:
        session = self._session(session_id)
        parts = [self._part(session, part_id)] if part_id else session["parts"]
        grading = [(session, part) for part in parts if part["status"] == GRADING]
        if not grading:
            raise Problem(409, "Conflict", f"no part of session {session_id} is being graded")
        return grading

    def _complete(self, session: dict, part: dict, job: dict) -> None:
        toolkit = self._toolkit(part["id"])
        previous = part.get("scoreReport")
        maximum = sum(item["points"] for section in toolkit["ruleset"]["sections"] for item in section["items"])
        score = job.get("score")
        if score is None:
            score = self.fixed_score if self.fixed_score is not None else self.random.randint(0, maximum)
        item = job.get("item")
        if item is not None and previous is not None:
            report = self._regraded_item(previous, item, score)
        else:
            report = self._score_report(part["id"], max(0, min(int(score), maximum)), previous)
        part["scoreReport"] = report
        part["status"] = REVIEWING
        part["firstGraded"] = part["firstGraded"] or self._now()
        self._audit(part, "graded", "grading-engine")
        self._touch(session)
        cut = toolkit["scoring"].get("cutScore")
        passed = None if cut is None else report["score"] >= cut
        breakdown = [
            {"criterion": section["id"], "points": section["score"], "max": section["maxScore"]}
            for section in report["sections"]
        ]
        data = self._event_data(session, part) | {
            "score": {"total": report["score"], "max": report["maxScore"], "breakdown": breakdown},
            "passed": passed,
        }
        self.events.emit(self.event_types["completed"], session["id"], data)

    def _fail(self, session: dict, part: dict, reason: str) -> None:
        part["status"] = FAULTED
        part["statusReason"] = reason
        self._audit(part, "grading failed", "grading-engine")
        self._touch(session)
        self.events.emit(self.event_types["failed"], session["id"], self._event_data(session, part) | {"error": reason})

    @staticmethod
    def _event_data(session: dict, part: dict) -> dict:
        return {
            "grading_session_id": session["id"],
            "session_id": session["id"],
            "part_id": part["id"],
            "candidate_id": session["candidateId"],
            "lds_session_id": (session.get("lds") or {}).get("id"),
            "status": part["status"],
        }

    def _score_report(self, part_id: str, score: int, previous: dict | None) -> dict:
        toolkit = self._toolkit(part_id)
        now = self._now()
        remaining = score
        sections = []
        for section in toolkit["ruleset"]["sections"]:
            items = []
            for item in section["items"]:
                earned = min(item["points"], remaining)
                remaining -= earned
                items.append(self._item_report(item, earned))
            reported = {
                "id": str(section["index"]),
                "createdAt": now,
                "lastModified": now,
                "score": sum(i["score"] for i in items),
                "maxScore": sum(i["maxScore"] for i in items),
                "items": items,
            }
            sections.append(reported)
        return {
            "createdAt": now,
            "lastModified": now,
            "gradingToolkitPackageMetadata": self._package_metadata(part_id),
            "gradingRulesetVersion": str(toolkit["version"]),
            "scoringRulesetVersion": toolkit["scoring"].get("version", 1),
            "generation": (previous or {}).get("generation", 0) + 1,
            "revision": 0,
            "score": sum(s["score"] for s in sections),
            "maxScore": sum(s["maxScore"] for s in sections),
            "sections": sections,
            "variables": {},
        }

    def _regraded_item(self, previous: dict, item: tuple[int, int], score: int) -> dict:
        """Re-grading one item: that item gets `score` (capped at its points); the revision goes up."""
        report = copy.deepcopy(previous)
        section = report["sections"][item[0]]
        target = section["items"][item[1]]
        target["score"] = max(0, min(int(score), target["maxScore"]))
        section["score"] = sum(i["score"] for i in section["items"])
        section["lastModified"] = report["lastModified"] = self._now()
        report["score"] = sum(s["score"] for s in report["sections"])
        report["revision"] += 1
        return report

    @staticmethod
    def _item_report(item: dict, earned: int) -> dict:
        results = []
        for index, rule in enumerate(item.get("rules") or []):
            result = {"ruleIndex": index, "command": rule.get("command"), "commandOutput": "(simulated output)"}
            if earned < item["points"]:
                result["issue"] = {"type": "mismatch", "description": f"expected {rule.get('match')!r} in the output"}
            results.append(result)
        return {
            "id": item["id"],
            "score": earned,
            "type": item.get("webItemType") or "lab",
            "maxScore": item["points"],
            "fieldTest": bool(item.get("fieldTest")),
            "evaluationResults": results,
            "questions": [],
        }

    # -- toolkit (ruleset, scoring, guide) ---------------------------------------------------

    def _toolkit(self, part_id: str) -> dict:
        if part_id not in self.toolkits:
            self.toolkits[part_id] = {
                "version": 1,
                "published": self._now(),
                "ruleset": copy.deepcopy(self.ruleset_fixture),
                "scoring": dict(self.scoring_fixture),
            }
        return self.toolkits[part_id]

    def _package_metadata(self, part_id: str) -> dict:
        toolkit = self._toolkit(part_id)
        return {
            "datePublished": toolkit["published"],
            "version": str(toolkit["version"]),
            "publisher": "lcm-simulator",
            "formName": part_id,
            "formId": part_id,
            "trackShortName": "LCM",
        }

    def _guide_html(self, part_id: str) -> str:
        toolkit = self._toolkit(part_id)
        rows = "".join(
            f"<li>{html.escape(str(item['id']))} {html.escape(str(item.get('description') or ''))}"
            f" ({item['points']} points)</li>"
            for section in toolkit["ruleset"]["sections"]
            for item in section["items"]
        )
        return f"<html><body><h1>Grading guide: {html.escape(part_id)}</h1><ul>{rows}</ul></body></html>"

    @staticmethod
    def _score_html(session: dict) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(part['id'])}</td><td>{html.escape(part['status'])}</td>"
            f"<td>{(part.get('scoreReport') or {}).get('score', '-')}"
            f" / {(part.get('scoreReport') or {}).get('maxScore', '-')}</td></tr>"
            for part in session["parts"]
        )
        return (
            f"<html><body><h1>Score report: {html.escape(session['id'])}</h1>"
            f"<table><tr><th>Part</th><th>Status</th><th>Score</th></tr>{rows}</table></body></html>"
        )
