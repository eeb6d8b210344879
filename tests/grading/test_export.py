"""The one score-report CSV export: the reports page and the REST API give the same file."""

import csv
import io

import pytest
from rest_framework.test import APIClient

from grading.export import CSV_COLUMNS, csv_cell
from lcm.api.tokens import token_create
from tests.factories import ScoreReportFactory, SessionFactory

MALICIOUS = "=cmd|' /C calc'!A0"


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (MALICIOUS, "'" + MALICIOUS),
        ("+1", "'+1"),
        ("-1+2", "'-1+2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("alice", "alice"),
        ("a=b", "a=b"),
        (None, ""),
        (42, "42"),
    ],
)
def test_a_cell_never_starts_a_formula(value, cell):
    assert csv_cell(value) == cell


@pytest.fixture
def reports(db):
    passed = ScoreReportFactory(lablet_session=SessionFactory(owner="alice", reservation_id="r-1"))
    passed.sections.create(name="ospf", score=40, max_score=50)
    passed.sections.create(name="@evil", score=1, max_score=2)
    failed = ScoreReportFactory(lablet_session=SessionFactory(owner=MALICIOUS), score=10, passed=False, manual=True)
    return passed, failed


def _rows(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="score-reports-')
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def _page_rows(client, admin_user) -> list[list[str]]:
    client.force_login(admin_user)
    return _rows(client.get("/reports/export.csv"))


def _api_rows(admin_user) -> list[list[str]]:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_create(admin_user, actor='test').key}")
    return _rows(api.get("/api/v1/score-reports/?format=csv"))


def test_page_and_api_give_the_same_header_and_rows(client, admin_user, reports):
    page, api = _page_rows(client, admin_user), _api_rows(admin_user)
    assert page[0] == api[0] == list(CSV_COLUMNS)
    assert sorted(page[1:]) == sorted(api[1:])
    assert len(page) == 3


def test_both_exports_escape_a_formula(client, admin_user, reports):
    passed, failed = reports
    for rows in (_page_rows(client, admin_user), _api_rows(admin_user)):
        by_id = {row[0]: dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]}
        bad = by_id[str(failed.pk)]
        assert bad["owner"] == "'" + MALICIOUS
        assert (bad["result"], bad["manual"], bad["percent"]) == ("FAIL", "yes", "10.0")
        good = by_id[str(passed.pk)]
        assert good["sections"] == "'@evil=1.00/2.00; ospf=40.00/50.00"
        assert (good["reservation_id"], good["definition_id"]) == ("r-1", str(passed.lablet_session.definition_id))
