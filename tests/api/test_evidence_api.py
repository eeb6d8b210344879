"""The evidence and re-grade endpoints' auth and refusals (SPEC §9, §5.1); their happy paths run through the loops
and simulators in tests/loops/test_evidence.py."""

import uuid

import pytest

from grading.models import EvidenceCollection, EvidenceItem, Regrade
from sessions.models import LabletSession
from tests.api.conftest import assert_conflict

pytestmark = pytest.mark.django_db


def _archived(session):
    LabletSession.objects.filter(pk=session.pk).update(status="ARCHIVED")
    return LabletSession.objects.get(pk=session.pk)


def test_evidence_needs_an_instructor_or_admin(session, anon_api, nobody_api, instructor_api, admin_api):
    for path in (f"/api/v1/sessions/{session.pk}/evidence/", f"/api/v1/sessions/{session.pk}/evidence/{uuid.uuid4()}/"):
        assert anon_api.get(path).status_code == 401
        assert nobody_api.get(path).status_code == 403
    assert anon_api.post(f"/api/v1/sessions/{session.pk}/regrade").status_code == 401
    assert nobody_api.post(f"/api/v1/sessions/{session.pk}/regrade").status_code == 403
    for api in (instructor_api, admin_api):
        answer = api.get(f"/api/v1/sessions/{session.pk}/evidence/")
        assert answer.status_code == 200 and answer.json()["count"] == 0


def test_unknown_sessions_and_items_are_404(session, instructor_api):
    assert instructor_api.get(f"/api/v1/sessions/{uuid.uuid4()}/evidence/").status_code == 404
    assert instructor_api.get(f"/api/v1/sessions/{session.pk}/evidence/{uuid.uuid4()}/").status_code == 404
    assert instructor_api.get(f"/api/v1/sessions/{session.pk}/evidence/not-a-uuid/").status_code == 404
    assert instructor_api.post(f"/api/v1/sessions/{uuid.uuid4()}/regrade").status_code == 404


def test_regrade_is_409_naming_why(session, instructor_api):
    body = assert_conflict(instructor_api.post(f"/api/v1/sessions/{session.pk}/regrade"), session.status)
    assert "only an ARCHIVED session can be re-graded" in body["detail"]

    archived = _archived(session)
    EvidenceCollection.objects.create(lablet_session=archived, status="MISSING", reason="s3 PutObject: 500")
    body = assert_conflict(instructor_api.post(f"/api/v1/sessions/{session.pk}/regrade"), "ARCHIVED")
    assert "no lab_yaml evidence" in body["detail"] and "s3 PutObject: 500" in body["detail"]
    assert not Regrade.objects.exists()


def test_a_regrade_under_way_is_returned_not_doubled(session, instructor_api):
    archived = _archived(session)
    key = f"sessions/{archived.pk}/lab_yaml/lab.yaml"
    EvidenceItem.objects.create(lablet_session=archived, kind="lab_yaml", object_key=key, sha256="0" * 64)
    first = instructor_api.post(f"/api/v1/sessions/{archived.pk}/regrade")
    assert first.status_code == 202 and first.json()["status"] == "REQUESTED"
    again = instructor_api.post(f"/api/v1/sessions/{archived.pk}/regrade")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert Regrade.objects.count() == 1
    assert "re-grade" in archived.history.last().reason
