"""Every variable `.env.example` documents is read, and every LCM_* setting is used (SPEC §7)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lcm.settings
from workers.models import SystemSettings

ROOT = Path(__file__).resolve().parent.parent.parent
SETTINGS_SOURCE = (ROOT / "lcm" / "settings.py").read_text()
PRODUCT = ("lcm", "sessions", "workers", "scheduling", "grading", "simulators")


def _documented() -> list[str]:
    return re.findall(r"^(LCM_\w+)=", (ROOT / ".env.example").read_text(), flags=re.MULTILINE)


def _product_sources() -> str:
    return "\n".join(
        path.read_text()
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        if path != ROOT / "lcm" / "settings.py" and "migrations" not in path.parts
    )


def test_every_documented_variable_is_read_by_the_settings():
    documented = _documented()
    assert len(documented) > 40
    unread = [name for name in documented if f'"{name}"' not in SETTINGS_SOURCE]
    assert unread == []


def test_every_lcm_setting_is_used_outside_the_settings():
    sources = _product_sources()
    names = [name for name in vars(lcm.settings) if name.startswith("LCM_")]
    assert len(names) > 40
    unused = [name for name in names if not re.search(rf'settings\.{name}\b|"{name}"', sources)]
    assert unused == []


@pytest.mark.django_db
def test_a_new_system_settings_row_takes_the_policy_from_the_environment(settings):
    settings.LCM_PLACEMENT_LEAD_MINUTES = 50
    settings.LCM_BOOT_LEAD_MINUTES = 12
    settings.LCM_GRADING_TIMEOUT_MINUTES = 45
    SystemSettings.objects.all().delete()
    row = SystemSettings.load()
    assert (row.placement_lead_minutes, row.boot_lead_minutes, row.grading_timeout_minutes) == (50, 12, 45)
    settings.LCM_BOOT_LEAD_MINUTES = 99  # the row is the policy from now on
    assert SystemSettings.load().boot_lead_minutes == 12


def _cache_settings(**env) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "LCM_CACHE_URL")}
    code = (
        "from lcm import settings as s; "
        "print(s.CACHES['default']['BACKEND'], s.SESSION_ENGINE, s.LCM_LIVE_SHARED_STAMPS)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=base | env, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()


def test_the_shared_cache_is_redis_when_configured_and_local_without_it():
    # The embedded default (`scripts/run`): no Redis at all, the cache in the process, login sessions in the database.
    assert _cache_settings() == [
        "django.core.cache.backends.locmem.LocMemCache",
        "django.contrib.sessions.backends.db",
        "False",
    ]
    shared = ["lcm.cache.SharedRedisCache", "django.contrib.sessions.backends.cached_db", "True"]
    assert _cache_settings(CELERY_BROKER_URL="redis://127.0.0.1:6379/0") == shared  # the launcher, compose
    assert _cache_settings(LCM_CACHE_URL="redis://127.0.0.1:6379/3") == shared
