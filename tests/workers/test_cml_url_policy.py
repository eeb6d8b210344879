"""CML URL policy (SPEC §12, issue 18: "an admin can set any cml_base_url; LCM then sends the deployment-wide
CML credentials there, over plain HTTP if asked; TLS verification is off by default").

The rule: with the policy on (production, DJANGO_DEBUG=0) a worker's cml_base_url typed by an admin (admin form,
REST API, `worker_add`) must be https on a host of LCM_CML_ALLOWED_HOSTS; the shipped CML simulator's URLs stay
allowed (the launcher runs production settings against it). With DEBUG on (the embedded default, tests) any
http(s) URL is. TLS to CML is verified by default, against LCM_CML_CA_BUNDLE when set."""

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.api.conftest import assert_field_error, client_for
from tests.factories import TemplateFactory
from tests.lcm.test_production_safety import manage
from workers.clients.cml import cml_client_for
from workers.cml_urls import cml_url_problem, host_allowed
from workers.models import CMLWorker
from workers.services import worker_create

pytestmark = pytest.mark.django_db

ALLOWED = ["cml.example.com", ".lab.example.com", "10.20.0.0/16", "2001:db8::1"]


@pytest.fixture
def production_policy(settings):
    settings.LCM_CML_URL_POLICY = True
    settings.LCM_CML_ALLOWED_HOSTS = ALLOWED
    settings.LCM_CML_SIMULATOR_URL = "http://127.0.0.1:8101"
    return settings


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://cml.example.com", None),
        ("https://cml.example.com:8443/", None),
        ("https://w1.lab.example.com", None),
        ("https://lab.example.com", None),
        ("https://10.20.3.4", None),
        ("https://[2001:db8::1]", None),
        ("http://127.0.0.1:8101/w/demo-worker-1", None),  # the shipped simulator
        ("http://cml.example.com", "https"),
        ("https://evil.example.net", "LCM_CML_ALLOWED_HOSTS"),
        ("https://cml.example.com.evil.net", "LCM_CML_ALLOWED_HOSTS"),
        ("https://notlab.example.com", "LCM_CML_ALLOWED_HOSTS"),
        ("https://10.21.0.1", "LCM_CML_ALLOWED_HOSTS"),
        ("http://127.0.0.1:8101/other", "https"),  # the simulator's server, but not one of its virtual CMLs
        ("http://127.0.0.1:9999/w/x", "https"),
        ("https://admin:pw@cml.example.com", "credentials"),
        ("ftp://cml.example.com", "http(s)"),
        ("javascript:alert(1)", "http(s)"),
    ],
)
def test_the_policy_in_production(production_policy, url, problem):
    found = cml_url_problem(url)
    assert (found is None) if problem is None else (problem in found), found


def test_with_debug_any_http_url_is_allowed(settings):
    settings.LCM_CML_URL_POLICY = False
    assert cml_url_problem("http://192.168.1.50") is None
    assert cml_url_problem("https://anything.example.net") is None
    assert "http(s)" in cml_url_problem("file:///etc/passwd")


def test_host_matching_is_exact_or_a_dot_domain():
    assert host_allowed("CML.Example.com.", ["cml.example.com"])
    assert not host_allowed("xcml.example.com", ["cml.example.com"])
    assert not host_allowed("example.com.evil", [".example.com"])
    assert not host_allowed("10.0.0.1", ["not-a-network/99", ""])


def test_the_service_refuses_naming_the_field(production_policy):
    with pytest.raises(ValidationError) as refused:
        worker_create(name="w", actor="test", status="RUNNING", cml_base_url="http://cml.example.com")
    assert "https" in refused.value.message_dict["cml_base_url"][0]
    assert not CMLWorker.objects.exists()
    worker_create(name="w", actor="test", status="RUNNING", cml_base_url="https://cml.example.com")


def test_the_api_refuses_with_a_field_error(production_policy, admin_user):
    admin_api = client_for(admin_user)
    for url in ("http://cml.example.com", "https://attacker.example.net"):
        response = admin_api.post("/api/v1/workers/", {"name": "x", "cml_base_url": url}, format="json")
        assert_field_error(response, "cml_base_url")
    assert not CMLWorker.objects.exists()


def test_the_admin_add_form_shows_the_error_on_the_field(production_policy, admin_client):
    template = TemplateFactory()
    response = admin_client.post(
        "/admin/workers/cmlworker/add/",
        {"name": "x", "template": template.pk, "cml_base_url": "http://evil.example.net", "cml_version": "2.9.0"},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "cml_base_url" in errors and "https" in errors["cml_base_url"][0]
    assert not CMLWorker.objects.exists()


def test_worker_add_is_one_line_and_exit_1(production_policy):
    with pytest.raises(CommandError) as refused:
        call_command("worker_add", "--cml-url", "https://evil.example.net", "--name", "x")
    assert "LCM_CML_ALLOWED_HOSTS" in str(refused.value) and "\n" not in str(refused.value)


def test_tls_to_cml_is_verified_by_default_and_takes_a_ca_bundle(settings, tmp_path):
    worker = CMLWorker(name="w", cml_base_url="https://cml.example.com")
    assert cml_client_for(worker).verify is True
    bundle = tmp_path / "cml-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings.LCM_CML_CA_BUNDLE = str(bundle)
    assert cml_client_for(worker).verify == str(bundle)
    settings.LCM_CML_VERIFY_TLS = False
    assert cml_client_for(worker).verify is False


def test_production_refuses_a_plain_http_or_unverified_real_cml(tmp_path):
    real = {"LCM_CML_PASSWORD": "a-real-cml-password", "LCM_CML_URL_TEMPLATE": "http://{address}"}
    result = manage("check", tmp_path=tmp_path, **real)
    assert result.returncode != 0 and "LCM_CML_URL_TEMPLATE must be an https URL" in result.stderr
    result = manage("check", tmp_path=tmp_path, **real | {"LCM_CML_URL_TEMPLATE": "https://{address}"})
    assert result.returncode == 0, result.stderr[-1500:]
    unverified = real | {"LCM_CML_URL_TEMPLATE": "https://{address}", "LCM_CML_VERIFY_TLS": "0"}
    result = manage("check", tmp_path=tmp_path, **unverified)
    assert result.returncode != 0 and "LCM_CML_VERIFY_TLS" in result.stderr
