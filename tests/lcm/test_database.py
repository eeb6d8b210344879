import pytest
from django.db import connection


@pytest.mark.django_db
def test_the_test_database_is_postgresql():
    assert connection.vendor == "postgresql"


@pytest.mark.django_db
def test_postgresql_binds_parameters_on_the_server_and_prepares_repeated_statements():
    """The loops run a few query shapes over and over on long-lived connections: psycopg prepares them
    (after `prepare_threshold` runs) so PostgreSQL parses and plans each once per connection."""
    import psycopg

    from sessions.models import LabletSession

    assert connection.settings_dict["OPTIONS"]["server_side_binding"] is True
    with connection.cursor() as cursor:
        assert not isinstance(cursor.cursor, psycopg.ClientCursor)  # parameters are bound on the server
    for _ in range(8):
        list(LabletSession.objects.filter(owner="nobody", status="READY").values_list("pk", flat=True))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%lablet_sessions%"])
        assert cursor.fetchone()[0] >= 1


def test_server_side_binding_can_be_turned_off_for_a_pooler(monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("LCM_DB_SERVER_SIDE_BINDING", "0")
    monkeypatch.setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/lcm")
    code = "from lcm import settings; print(settings.DATABASES['default'].get('OPTIONS', {}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "{}"
