"""Test settings: the real PostgreSQL unless DATABASE_URL says otherwise."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/lcm")
# Most tests book onto no fleet at all: admission (SPEC §10) is off unless a test switches it on
# (SystemSettings.admission, or on_capacity). Set in the environment so `manage.py` subprocesses share it.
os.environ.setdefault("LCM_ADMISSION", "off")

from lcm.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Unit tests drive reconcilers explicitly; the loop tests switch projection on themselves.
LCM_PROJECTION_ENABLED = False
LCM_INPROCESS_WORKERS = 0
# Evidence needs the S3 of the moto simulator: the tests about it start one and switch it on themselves.
LCM_EVIDENCE_ENABLED = False
