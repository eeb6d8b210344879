"""Production (`DJANGO_DEBUG=0`) refuses to be unsafe (issue 18, SPEC §12): weak secrets, default
external credentials, demo users; `check --deploy` is clean; passwords meet the validators."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SETTINGS_MODULE": "lcm.settings",
    "DJANGO_SECRET_KEY": "a-production-secret-key-for-the-tests-0123456789-abcdefghij",
    "LCM_INTERNAL_API_KEY": "production-internal-api-key",
    "LCM_WEBHOOK_SECRET": "production-webhook-secret",
}


def manage(*args, tmp_path, **env) -> subprocess.CompletedProcess:
    """`manage.py <args>` in a fresh process: production settings, a throwaway SQLite database."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LCM_", "DATABASE_URL"))}
    clean |= PRODUCTION | {"DATABASE_URL": f"sqlite:///{tmp_path / 'lcm.sqlite3'}", "LCM_VAR_DIR": str(tmp_path)}
    clean |= env
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_production_settings_with_real_secrets_pass_the_check(tmp_path):
    result = manage("check", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DJANGO_SECRET_KEY", ""),
        ("DJANGO_SECRET_KEY", "  insecure-local-only-lcm-secret-key  "),
        ("DJANGO_SECRET_KEY", "short-but-not-default-key-0123"),
        ("LCM_INTERNAL_API_KEY", "abc"),
        ("LCM_INTERNAL_API_KEY", " local-internal-api-key"),
        ("LCM_WEBHOOK_SECRET", "   "),
        ("LCM_WEBHOOK_SECRET", "local-webhook-secret\n"),
    ],
)
def test_production_refuses_an_empty_default_or_short_secret(tmp_path, name, value):
    result = manage("check", tmp_path=tmp_path, **{name: value})
    assert result.returncode != 0
    assert name in last_line(result.stderr)


@pytest.mark.parametrize(
    ("name", "endpoint"),
    [
        ("LCM_CML_PASSWORD", {"LCM_CML_URL_TEMPLATE": "https://{address}"}),
        ("LCM_LDS_CLIENT_SECRET", {"LCM_LDS_BASE_URL": "https://lds.example.com"}),
        ("LCM_GRADING_CLIENT_SECRET", {"LCM_GRADING_BASE_URL": "https://grading.example.com"}),
    ],
)
def test_production_refuses_default_credentials_for_a_real_system(tmp_path, name, endpoint):
    refused = manage("check", tmp_path=tmp_path, **endpoint)
    assert refused.returncode != 0
    assert name in last_line(refused.stderr)
    accepted = manage("check", tmp_path=tmp_path, **endpoint, **{name: "a-real-credential-0123456789"})
    assert accepted.returncode == 0, accepted.stderr[-2000:]


def test_all_refused_variables_are_named_on_one_line(tmp_path):
    result = manage("check", tmp_path=tmp_path, DJANGO_SECRET_KEY="", LCM_WEBHOOK_SECRET="x")
    assert result.returncode != 0
    line = last_line(result.stderr)
    assert "DJANGO_SECRET_KEY" in line and "LCM_WEBHOOK_SECRET" in line
    assert "LCM_INTERNAL_API_KEY" not in line


def test_lcm_run_refuses_demo_users_and_data_in_production(tmp_path):
    migrated = manage("migrate", "--verbosity", "0", tmp_path=tmp_path)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    result = manage("lcm_run", "--no-serve", "--no-simulators", "--no-loops", tmp_path=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "DJANGO_DEBUG=0" in result.stderr and "lcm-stack" in result.stderr
    with sqlite3.connect(tmp_path / "lcm.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM auth_user").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM cml_workers").fetchone() == (0,)


@pytest.mark.django_db
def test_seeding_demo_users_or_data_is_refused_in_production(settings, django_user_model):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from sessions.seed import DemoDataRefused, ensure_users, seed_demo

    settings.DEMO_DATA_ALLOWED = False
    with pytest.raises(DemoDataRefused):
        ensure_users()
    with pytest.raises(DemoDataRefused):
        seed_demo()
    with pytest.raises(CommandError, match="DJANGO_DEBUG=0"):
        call_command("lcm_seed_demo")
    assert not django_user_model.objects.exists()


@pytest.mark.parametrize("weak", ["12345678", "password", "short1"])
def test_the_password_validators_refuse_weak_passwords(weak):
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        validate_password(weak)
    validate_password("correct-horse-battery-staple-42")


@pytest.mark.django_db
@pytest.mark.parametrize("weak", ["12345678", "password"])
def test_the_admin_refuses_a_new_user_with_a_weak_password(client, admin_user, django_user_model, weak):
    client.force_login(admin_user)
    form = {"username": "newuser", "usable_password": "true", "password1": weak, "password2": weak}
    response = client.post("/admin/auth/user/add/", form)
    assert response.status_code == 200  # the form again, with the validator's error
    assert not django_user_model.objects.filter(username="newuser").exists()
    form |= {"password1": "correct-horse-battery-staple-42", "password2": "correct-horse-battery-staple-42"}
    assert client.post("/admin/auth/user/add/", form).status_code == 302
    assert django_user_model.objects.filter(username="newuser").exists()


def test_check_deploy_is_clean_in_production(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_production_redirects_to_https_with_hsts_unless_told_plain_http(tmp_path):
    names = ("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_PROXY_SSL_HEADER")

    def probe(**env) -> list[str]:
        code = f"from django.conf import settings; print('|'.join(str(getattr(settings, n)) for n in {names!r}))"
        result = manage("shell", "--no-imports", "-c", code, tmp_path=tmp_path, **env)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip().splitlines()[-1].split("|")

    assert probe() == ["True", "31536000", "True", "None"]
    proxied = probe(DJANGO_SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO")
    assert proxied[3] == "('HTTP_X_FORWARDED_PROTO', 'https')"
    assert probe(DJANGO_SECURE_COOKIES="0")[:2] == ["False", "0"]  # plain HTTP: the launcher on loopback


@pytest.mark.django_db
def test_pages_carry_the_security_headers(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "'unsafe-inline'" in client.get("/api/docs/")["Content-Security-Policy"].split("script-src")[1]
