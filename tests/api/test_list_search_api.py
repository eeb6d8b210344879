"""The list pages' `?q=` substring search on the REST lists too (issue 19): the FilterSets are shared, so
`/api/v1/…/?q=` finds what the page's search box finds, and an overlong search is a 400 naming `q`."""

import pytest

from tests.api.conftest import assert_field_error
from tests.factories import DefinitionFactory, ScoreReportFactory, SessionFactory, WorkerFactory

pytestmark = pytest.mark.django_db


def test_q_searches_the_rest_lists(instructor_api):
    definition = DefinitionFactory(name="CCNA Routing", version="2.10.1", form_qualified_name="Cisco-CCNA")
    DefinitionFactory(name="Security")
    WorkerFactory(name="edge-paris", aws_instance_id="i-0abc123")
    WorkerFactory(name="core-tokyo")
    alice = SessionFactory(definition=definition, owner="alice@example.com", reservation_id="RES-1")
    SessionFactory(definition=definition, owner="bob@example.com")
    ScoreReportFactory(lablet_session=alice)

    def names(url, field):
        response = instructor_api.get(url)
        assert response.status_code == 200, response.content
        return [row[field] for row in response.json()["results"]]

    assert names("/api/v1/definitions/?q=cisco-ccna", "name") == ["CCNA Routing"]
    assert names("/api/v1/workers/?q=ABC123", "name") == ["edge-paris"]
    assert names("/api/v1/sessions/?q=ALICE", "owner") == ["alice@example.com"]
    assert names(f"/api/v1/sessions/?q={str(alice.pk)[:8]}", "owner") == ["alice@example.com"]
    assert len(names("/api/v1/score-reports/?q=routing", "id")) == 1  # the definition's name
    assert names("/api/v1/score-reports/?q=bob", "id") == []
    assert_field_error(instructor_api.get("/api/v1/workers/", {"q": "x" * 300}), "q")
