"""Demo seeding and the embedded run command's preparation step."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from sessions.models import LabletDefinition, LabletSession
from sessions.seed import DEMO_WORKERS, database_is_empty, seed_demo
from workers.models import CMLWorker

pytestmark = pytest.mark.django_db


def test_seed_creates_the_demo_and_is_idempotent():
    assert database_is_empty()
    created = seed_demo()
    assert len(created["workers"]) == 3 and len(created["sessions"]) == 4
    definition = LabletDefinition.objects.get()
    assert definition.status == "ACTIVE" and definition.grading_enabled
    assert [p["protocol"] for p in definition.port_template] == ["serial", "serial", "vnc"]
    workers = CMLWorker.objects.filter(name__in=DEMO_WORKERS)
    assert {w.status for w in workers} == {"RUNNING"}
    assert all("/w/" in w.cml_base_url for w in workers)
    assert get_user_model().objects.get(username="admin").is_superuser
    assert get_user_model().objects.get(username="instructor").groups.filter(name="instructors").exists()

    again = seed_demo()
    assert all(not names for names in again.values())
    assert LabletSession.objects.count() == 4


def test_lcm_seed_demo_command(capsys):
    call_command("lcm_seed_demo")
    assert "workers: 3 created" in capsys.readouterr().out
    call_command("lcm_seed_demo", "--json")
    assert '"workers": []' in capsys.readouterr().out


def test_lcm_run_prepares_the_database_without_serving(capsys):
    call_command("lcm_run", "--no-serve", "--port", "8123")
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/accounts/login/" in out
    assert CMLWorker.objects.count() == 3


def test_lcm_run_rejects_a_bad_port():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not a TCP port"):
        call_command("lcm_run", "--no-serve", "--port", "70000")


def test_admin_login_works_with_the_demo_password(client):
    seed_demo()
    response = client.post("/admin/login/?next=/admin/", {"username": "admin", "password": "admin"})
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
