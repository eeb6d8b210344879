"""Shared fixtures; with LCM_TEST_STRICT=1 (set by .ci/run) a skipped test counts as a failure."""

import os
from pathlib import Path

import pytest

from tests.support.browser import browser, open_page  # noqa: F401 - fixtures for the browser tests
from tests.support.etcd import etcd_url  # noqa: F401 - a real etcd, for the tests that need one
from tests.support.oidc import oidc_provider  # noqa: F401 - the OIDC simulator as LCM's identity provider

SHARED_SPECS = Path(__file__).resolve().parent.parent.parent / "shared" / "specs"
PROCESSES = Path(__file__).resolve().parent / "processes"


def pytest_collection_modifyitems(items):
    """Everything under tests/processes spawns real process stacks: marked `processes` (see pyproject.toml)."""
    for item in items:
        if PROCESSES in item.path.parents:
            item.add_marker(pytest.mark.processes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI nothing may silently skip: a skip there means a missing dependency, so it fails."""
    report = yield
    if os.environ.get("LCM_TEST_STRICT") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under LCM_TEST_STRICT=1: {report.longrepr}"
    return report


@pytest.fixture
def shared_specs() -> Path:
    """`../shared/specs`, which CI has; a user's fresh machine may not (skip there, fail in CI)."""
    if not SHARED_SPECS.is_dir():
        pytest.skip(f"{SHARED_SPECS} is not present on this machine")
    return SHARED_SPECS


@pytest.fixture
def sample_lab_yaml(shared_specs) -> str:
    return (shared_specs / "sample-cml-lab.yaml").read_text()


@pytest.fixture
def instructor(django_user_model):
    """A user of the instructor group (tests/api has its own, named for the API tests)."""
    from django.contrib.auth.models import Group  # Imported here: Django is set up only once the session has started.

    from lcm.roles import INSTRUCTOR_GROUP  # Imported here: as above.

    user = django_user_model.objects.create_user("instructor", "i@example.com", "instructor-pass")
    user.groups.add(Group.objects.get_or_create(name=INSTRUCTOR_GROUP)[0])
    return user


@pytest.fixture
def api(instructor):
    """A REST client signed in as the instructor."""
    from rest_framework.test import APIClient  # Imported here: Django is set up only once the session has started.

    client = APIClient()
    client.force_authenticate(instructor)
    return client


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-pass")


@pytest.fixture(autouse=True)
def _quiet_inprocess_pool():
    """A test that let the in-process pool run (after-commit wake-ups, delayed requeues) ends with it idle.

    A pass still running at teardown would hold row locks while pytest-django flushes the tables
    (a deadlock that fails the flush) or write rows into the next test. This fixture is set up after
    the database fixture, so it is torn down before the flush.
    """
    yield
    from lcm import loops  # Imported here: Django is set up only once the session has started.

    assert loops.quiesce(timeout=30), "in-process reconciles still running 30 s after the test"


@pytest.fixture(autouse=True)
def _forget_external_tokens():
    """Tokens are cached per process; each test starts without any (a simulator may be new)."""
    from grading.clients.grading_engine import forget_tokens as forget_grading_tokens
    from workers.clients.cml import forget_tokens as forget_cml_tokens

    forget_cml_tokens()
    forget_grading_tokens()
    yield
