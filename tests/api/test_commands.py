"""`manage.py token_create` and `manage.py bench_api` (SPEC §5.6, §6.3)."""

import json
from pathlib import Path

import pytest

from lcm.api.tokens import hash_key
from lcm.models import ApiToken
from sessions.models import LabletDefinition, LabletSession
from tests.support.commands import fails, manage, run
from workers.models import CMLWorker

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent.parent


def test_token_create_prints_the_key_once(instructor, client):
    output = run("token_create", "api-instructor", "--name", "ci")
    key = output.strip().splitlines()[-1]
    token = ApiToken.objects.get()
    assert token.key_hash == hash_key(key) and token.name == "ci" and token.expires_at is None
    assert "not shown again" in output
    assert client.get("/api/v1/status/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200


def test_token_create_json_with_expiry(instructor):
    data = json.loads(run("token_create", "api-instructor", "--expires-days", "30", "--json"))
    assert data["user"] == "api-instructor"
    assert data["key"].startswith(data["key_prefix"])
    assert data["expires_at"].endswith("Z")
    assert ApiToken.objects.get().key_hash == hash_key(data["key"])


def test_token_create_errors(instructor, django_user_model):
    assert fails("token_create", "nobody-here") == "no user named 'nobody-here'"
    assert "expires_days" in fails("token_create", "api-instructor", "--expires-days", "0")
    assert "name" in fails("token_create", "api-instructor", "--name", "x" * 101)
    django_user_model.objects.create_user("gone", is_active=False)
    assert "inactive" in fails("token_create", "gone")
    assert not ApiToken.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_token_create_exit_code_and_one_line_on_stderr():
    # The child process must use the test database, which exists for sure (the default one may not).
    result = manage("token_create", "no-such-user-anywhere", settings_module="tests.settings")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == "CommandError: no user named 'no-such-user-anywhere'"


def test_bench_api_small_run_leaves_nothing_behind():
    before = (LabletSession.objects.count(), LabletDefinition.objects.count(), CMLWorker.objects.count())
    data = json.loads(run("bench_api", "--sessions", "120", "--requests", "12", "--json"))
    assert data["sessions_inserted"] == 120
    for key in ("api_list", "peer_list", "api_detail", "peer_detail"):
        assert data[key]["p95_ms"] >= data[key]["p50_ms"] > 0
        assert data[key]["queries_constant"], key
    assert data["same_sql"] == {"list": True, "detail": True}
    assert len(set(data["list_queries_by_page_size"].values())) == 1
    assert data["api_list"]["queries_per_request"] <= 4
    after = (LabletSession.objects.count(), LabletDefinition.objects.count(), CMLWorker.objects.count())
    assert after == before
    assert not ApiToken.objects.exists()


def test_bench_api_text_output_and_bad_arguments():
    output = run("bench_api", "--sessions", "60", "--requests", "10")
    assert "GET /api/v1/sessions/ (REST)" in output and "peer: same SQL" in output
    assert "queries per request" in output
    assert "--sessions" in fails("bench_api", "--sessions", "0")
    assert "--page-size" in fails("bench_api", "--page-size", "501")
