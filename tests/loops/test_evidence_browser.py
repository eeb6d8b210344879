"""An instructor checks a finished exam's evidence and re-grades it in a real browser (SPEC §9): the Evidence
section's download links, the Re-grade button, its progress while the `regrades` loop works, and both score
reports afterwards. Chromium through Playwright, the in-process loops and the simulators (moto's S3 included)."""

import hashlib

import pytest

from grading.models import EvidenceItem, Regrade
from sessions.booking import session_create
from sessions.services import session_transition
from tests.factories import DefinitionFactory
from tests.loops import test_evidence
from tests.loops.test_evidence import CANDIDATE_CONFIG, _configure
from tests.support.loops import status_of
from tests.support.waiting import poll

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

sims = test_evidence.sims  # the simulators with moto's S3, evidence on


def test_an_instructor_downloads_the_evidence_and_regrades_from_the_page(
    open_page, instructor, sims, sim_worker, live_loops, settings
):
    settings.LCM_LOOP_REGRADES_SECONDS = 0.2
    sim_worker("w1")
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="cand@example.com", actor="t")
    assert poll(lambda: status_of(session) == "READY", timeout=30), status_of(session)
    session_transition(session, "RUNNING", actor="instructor", reason="Start Session")
    _configure(sims, session, "edge-router", CANDIDATE_CONFIG)
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    assert poll(lambda: status_of(session) == "ARCHIVED", timeout=60), status_of(session)

    page = open_page(instructor, f"/sessions/{session.pk}/")
    evidence = page.locator("#evidence")
    assert evidence.locator("[data-evidence]").count() == EvidenceItem.objects.filter(lablet_session=session).count()
    item = EvidenceItem.objects.get(lablet_session=session, kind="lab_yaml")
    link = evidence.locator("[data-evidence=lab_yaml] a")
    assert link.get_attribute("href") == f"/api/v1/sessions/{session.pk}/evidence/{item.pk}/"
    downloaded = page.request.get(link.get_attribute("href"))
    assert downloaded.ok and hashlib.sha256(downloaded.body()).hexdigest() == item.sha256
    assert CANDIDATE_CONFIG.splitlines()[0] in downloaded.text()
    assert page.locator("[data-score-report]").count() == 1

    evidence.get_by_role("button", name="Re-grade").click()
    page.locator(".toast").filter(has_text="Re-grade started").wait_for()
    assert page.locator("[data-regrade]").count() == 1  # its progress shows at once ...
    # ... and follows the loop live, until the second report is there (the newest current).
    assert poll(lambda: page.locator("[data-score-report]").count() == 2, timeout=60), page.content()[-3000:]
    assert page.locator("[data-score-report]").first.get_attribute("data-current") == "true"
    assert poll(lambda: "DONE" in page.locator("[data-regrade]").inner_text(), timeout=30)
    regrade = Regrade.objects.get(lablet_session=session)
    assert regrade.status == "DONE" and status_of(session) == "ARCHIVED"
    assert "re-grade TEARING_DOWN → DONE" in page.locator(".timeline").inner_text()
