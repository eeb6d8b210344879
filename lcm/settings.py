"""LCM settings, read from the environment (SPEC §7).

Every variable is listed in `.env.example` with its safe local default. With nothing
set, LCM runs on its embedded default: SQLite, in-process tasks and coordination.
"""

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from lcm import security

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("LCM_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

INSECURE_SECRET_KEY = "insecure-local-only-lcm-secret-key"  # noqa: S105 - local default, refused in production

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=INSECURE_SECRET_KEY)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INTERNAL_API_KEY = env.str("LCM_INTERNAL_API_KEY", default="local-internal-api-key")
WEBHOOK_SECRET = env.str("LCM_WEBHOOK_SECRET", default="local-webhook-secret")
DEMO_ADMIN_PASSWORD = env.str("LCM_DEMO_ADMIN_PASSWORD", default="admin")
# Demo users (admin/admin) and demo data are the embedded default's, a DEBUG thing: production refuses
# them. Fixed here from DJANGO_DEBUG, because the test runner turns DEBUG off at run time.
DEMO_DATA_ALLOWED = DEBUG

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_fsm",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "lcm.apps.LcmConfig",
    "sessions.apps.LabletSessionsConfig",
    "workers.apps.WorkersConfig",
    "scheduling.apps.SchedulingConfig",
    "grading.apps.GradingConfig",
]

MIDDLEWARE = [
    "lcm.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "lcm.security.ContentSecurityPolicyMiddleware",
    # An unchanged live poll of a signed-in user allowed the page is answered 204 here, before the login
    # session, CSRF, messages and the view run (lcm.live_polls); anything else goes on down the chain.
    "lcm.live_polls.LivePollMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last (django-axes): turns a refused, locked-out sign-in into the lockout page (429).
    "axes.middleware.AxesMiddleware",
]

if not DEBUG:
    # Production serves static files itself (collected by the launcher); DEBUG uses runserver's.
    MIDDLEWARE.insert(2, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "lcm.urls"
WSGI_APPLICATION = "lcm.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "lcm.oidc.sso_context",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'lcm.sqlite3'}")}
DATABASES["default"].setdefault("ATOMIC_REQUESTS", False)
# PostgreSQL: parameters travel apart from the SQL (server-side binding), and psycopg prepares a
# statement a connection runs repeatedly (the loops' few query shapes), so it is parsed and planned once.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool(
    "LCM_DB_SERVER_SIDE_BINDING", default=True
):
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options.setdefault("server_side_binding", True)
    options.setdefault("prepare_threshold", 5)  # Django turns psycopg's preparing off unless asked
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if DATABASES["default"]["NAME"] != ":memory:":
        # SQLite makes the file but not its directory: a fresh clone's `var/` (or LCM_VAR_DIR) does not exist yet.
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The embedded default writes from several threads (web, loops): take the write lock when a
    # transaction begins (no lock-upgrade deadlocks), wait for it, and let readers run alongside (WAL).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Every password a person sets (admin forms, `changepassword`) meets all four of Django's validators (SPEC §12).
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# 24-h ISO date and time formats wherever Django formats a date itself (the admin): lcm/formats/en/.
FORMAT_MODULE_PATH = ["lcm.formats"]

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- Identity (SPEC §12): local accounts and OpenID Connect sign-in, logins throttled. ---
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out account or address before any password is checked (django-axes).
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    # Answers only the single sign-on callback, and only while LCM_OIDC_ISSUER is set (lcm.oidc).
    "lcm.oidc.OidcBackend",
]
# Single sign-on (authorization code + PKCE): the provider's endpoints come from its discovery document
# (<issuer>/.well-known/openid-configuration); ID tokens are RS256, checked against its JWKS, our client id as
# audience and the issuer. Roles from the `groups` claim; a user in neither group gets no access.
LCM_OIDC_ISSUER = env.str("LCM_OIDC_ISSUER", default="").strip().rstrip("/")
LCM_OIDC_CLIENT_ID = env.str("LCM_OIDC_CLIENT_ID", default="lcm")
LCM_OIDC_CLIENT_SECRET = env.str("LCM_OIDC_CLIENT_SECRET", default="")
LCM_OIDC_ADMIN_GROUP = env.str("LCM_OIDC_ADMIN_GROUP", default="lcm-admins")
LCM_OIDC_INSTRUCTOR_GROUP = env.str("LCM_OIDC_INSTRUCTOR_GROUP", default="instructors")
LCM_OIDC_VERIFY_TLS = env.bool("LCM_OIDC_VERIFY_TLS", default=True)
# mozilla-django-oidc's own settings (lcm.oidc supplies the endpoints and the client from the LCM_OIDC_* ones).
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_RP_SCOPES = "openid email profile"
OIDC_USE_PKCE = True
OIDC_PKCE_CODE_CHALLENGE_METHOD = "S256"
OIDC_USE_NONCE = True
OIDC_AUTHENTICATION_CALLBACK_URL = "oidc-callback"
OIDC_VERIFY_SSL = LCM_OIDC_VERIFY_TLS
OIDC_CREATE_USER = True

# Throttling (django-axes): after LCM_LOGIN_FAILURE_LIMIT failed sign-ins the username and the client address
# are locked for LCM_LOGIN_LOCKOUT_MINUTES (login page, admin and API tokens); a right password meanwhile is
# refused too; the lock ends by itself. Attempts live in the database (SQLite or PostgreSQL).
# (Read only to build the AXES_* settings below, so not settings of their own.)
_login_failure_limit = env.int("LCM_LOGIN_FAILURE_LIMIT", default=5)
_login_lockout_minutes = env.float("LCM_LOGIN_LOCKOUT_MINUTES", default=15.0)
# Behind a proxy: the request header holding the client address it saw (e.g. HTTP_X_FORWARDED_FOR; its
# rightmost entry counts). Unset: the connection's address (REMOTE_ADDR).
LCM_CLIENT_IP_HEADER = env.str("LCM_CLIENT_IP_HEADER", default="")
AXES_FAILURE_LIMIT = _login_failure_limit
AXES_COOLOFF_TIME = timedelta(minutes=_login_lockout_minutes)
AXES_LOCKOUT_PARAMETERS = "lcm.throttle.lockout_parameters"
AXES_CLIENT_IP_CALLABLE = "lcm.throttle.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_SENSITIVE_PARAMETERS = ["password", "code", "code_verifier", "nonce", "state"]

SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # the pages and the API docs send the token from the template, never from the cookie

# --- Security headers (SPEC §12): `manage.py check --deploy` is clean in production. ---
# Served over TLS unless the deployment says plain HTTP (DJANGO_SECURE_COOKIES=0: the launcher on loopback).
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=SESSION_COOKIE_SECURE)
# Probes, the metrics scraper and the signed webhook reach the web process directly, over the private network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^api/events$"]
# Behind a TLS-terminating proxy: the header it sets to `https`, e.g. HTTP_X_FORWARDED_PROTO.
_proxy_ssl_header = env.str("DJANGO_SECURE_PROXY_SSL_HEADER", default="")
SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header, "https") if _proxy_ssl_header else None
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000 if SESSION_COOKIE_SECURE else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Set by lcm.security.ContentSecurityPolicyMiddleware. Scripts and stylesheets are our own static files
# (htmx vendored); inline styles stay allowed: `style="width: N%"` meters and htmx's indicator styles.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# drf-spectacular's Swagger UI page configures itself with one inline script (that page only).
CONTENT_SECURITY_POLICY_BY_PATH = {
    "/api/docs/": CONTENT_SECURITY_POLICY.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")
}

# Worker templates are seeded from this file on `migrate` (create-only).
LCM_WORKER_TEMPLATES_FILE = env.str("LCM_WORKER_TEMPLATES_FILE", default=str(BASE_DIR / "workers" / "templates.yaml"))

# CML worker defaults (the simulator's virtual workers in the embedded default).
LCM_CML_SIMULATOR_URL = env.str("LCM_CML_SIMULATOR_URL", default="http://127.0.0.1:8101")
LCM_CML_USERNAME = env.str("LCM_CML_USERNAME", default="admin")
LCM_CML_PASSWORD = env.str("LCM_CML_PASSWORD", default="admin")

# Placement and timing policy a new SystemSettings row starts with (workers.models); admins
# change it on the row afterwards, so these matter only until the row exists.
LCM_PLACEMENT_LEAD_MINUTES = env.int("LCM_PLACEMENT_LEAD_MINUTES", default=35)
LCM_BOOT_LEAD_MINUTES = env.int("LCM_BOOT_LEAD_MINUTES", default=20)
LCM_GRADING_TIMEOUT_MINUTES = env.int("LCM_GRADING_TIMEOUT_MINUTES", default=30)
LCM_MAX_EXTENSION_MINUTES = env.int("LCM_MAX_EXTENSION_MINUTES", default=30)
# A new SystemSettings row's admission (SPEC §10): refuse | warn | off what the fleet cannot hold.
LCM_ADMISSION = env.str("LCM_ADMISSION", default="refuse")
LCM_SESSION_START_GRACE_SECONDS = env.int("LCM_SESSION_START_GRACE_SECONDS", default=60)
# Live pages (lcm.live): an unchanged poll answers 204 from the scopes' change stamps without rendering; a page
# still re-renders at least every LCM_LIVE_REFRESH_SECONDS (countdowns, relative times); a process re-reads the
# stamps at most every LCM_LIVE_STAMP_TTL seconds. LCM_LIVE_DIGEST_ONLY=1 renders every poll (the old way).
LCM_LIVE_REFRESH_SECONDS = env.float("LCM_LIVE_REFRESH_SECONDS", default=10.0)
LCM_LIVE_STAMP_TTL = env.float("LCM_LIVE_STAMP_TTL", default=0.5)
LCM_LIVE_DIGEST_ONLY = env.bool("LCM_LIVE_DIGEST_ONLY", default=False)

# Read only to build LOGGING below, so not settings of their own.
_log_format = env.str("LCM_LOG_FORMAT", default="text")
_log_level = env.str("LCM_LOG_LEVEL", default="INFO")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "lcm.logging.RequestIdFilter"},
        "expected_4xx": {"()": "lcm.logging.ExpectedClientErrorFilter"},
    },
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "lcm.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": "json" if _log_format == "json" else "text",
        },
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "lcm": {"handlers": ["console"], "level": _log_level, "propagate": False},
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # Quiet, useful logs: 4xx are one line without a traceback; no line per request served (the live pages
        # poll every second): runserver's `django.server` and the simulators' `werkzeug` log only 4xx/5xx.
        "django.request": {
            "handlers": ["console"],
            "level": "WARNING",
            "filters": ["expected_4xx"],
            "propagate": False,
        },
        "django.server": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "werkzeug": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}

# --- External systems (SPEC §7). Defaults point at the shipped simulators (SPEC §1). ---
LCM_HTTP_CONNECT_TIMEOUT = env.float("LCM_HTTP_CONNECT_TIMEOUT", default=3.05)
LCM_HTTP_READ_TIMEOUT = env.float("LCM_HTTP_READ_TIMEOUT", default=10.0)
LCM_HTTP_RETRIES = env.int("LCM_HTTP_RETRIES", default=3)
# CML URL policy (SPEC §12): LCM sends the deployment-wide CML credentials to a worker's cml_base_url, so in
# production (DJANGO_DEBUG=0) an admin may only set https URLs on hosts of LCM_CML_ALLOWED_HOSTS (names,
# `.example.com` for a domain and its subdomains, IP addresses or CIDR networks); the shipped CML simulator
# (LCM_CML_SIMULATOR_URL) stays allowed. With DEBUG on (the embedded default, tests) any http(s) URL is.
# Fixed here from DJANGO_DEBUG, like DEMO_DATA_ALLOWED: the test runner turns DEBUG off at run time.
LCM_CML_URL_POLICY = not DEBUG
LCM_CML_ALLOWED_HOSTS = env.list("LCM_CML_ALLOWED_HOSTS", default=[])
# TLS to CML is verified, against LCM_CML_CA_BUNDLE (a PEM file or directory) when set (self-signed controllers:
# put their CA there); LCM_CML_VERIFY_TLS=0 turns verification off (refused in production for a real CML).
LCM_CML_VERIFY_TLS = env.bool("LCM_CML_VERIFY_TLS", default=True)
LCM_CML_CA_BUNDLE = env.str("LCM_CML_CA_BUNDLE", default="")
LCM_LDS_BASE_URL = env.str("LCM_LDS_BASE_URL", default="http://127.0.0.1:8102")
LCM_LDS_CLIENT_ID = env.str("LCM_LDS_CLIENT_ID", default="lcm")
LCM_LDS_CLIENT_SECRET = env.str("LCM_LDS_CLIENT_SECRET", default="local-lds-secret")
LCM_GRADING_BASE_URL = env.str("LCM_GRADING_BASE_URL", default="http://127.0.0.1:8103")
LCM_GRADING_CLIENT_ID = env.str("LCM_GRADING_CLIENT_ID", default="lcm")
LCM_GRADING_CLIENT_SECRET = env.str("LCM_GRADING_CLIENT_SECRET", default="local-grading-secret")
LCM_GRADING_TOKEN_URL = env.str("LCM_GRADING_TOKEN_URL", default="")  # default: the realm on LCM_GRADING_BASE_URL
LCM_GRADING_REALM = env.str("LCM_GRADING_REALM", default="lcm")
LCM_GRADING_SCOPE = env.str("LCM_GRADING_SCOPE", default="api")
LCM_AWS_REGION = env.str("LCM_AWS_REGION", default="us-east-1")
LCM_AWS_ENDPOINT_URL = env.str("LCM_AWS_ENDPOINT_URL", default="")  # e.g. http://127.0.0.1:8104 for moto
# Evidence (SPEC §9): S3-compatible object storage through boto3; the endpoint defaults to LCM_AWS_ENDPOINT_URL
# (the moto simulator in the embedded default, the launcher and tests), the bucket is made when missing.
LCM_EVIDENCE_ENABLED = env.bool("LCM_EVIDENCE_ENABLED", default=True)
LCM_EVIDENCE_BUCKET = env.str("LCM_EVIDENCE_BUCKET", default="lcm-evidence")
LCM_EVIDENCE_ENDPOINT_URL = env.str("LCM_EVIDENCE_ENDPOINT_URL", default="")
LCM_LDS_EVENT_PREFIX = env.str("LCM_LDS_EVENT_PREFIX", default="io.lablet.lds")
LCM_GRADING_EVENT_PREFIX = env.str("LCM_GRADING_EVENT_PREFIX", default="io.lablet.grading")

# --- Simulators (SPEC §1): where `manage.py lcm_simulators` and the embedded default serve them. ---
LCM_SIM_HOST = env.str("LCM_SIM_HOST", default="127.0.0.1")
LCM_SIM_CML_PORT = env.int("LCM_SIM_CML_PORT", default=8101)
LCM_SIM_LDS_PORT = env.int("LCM_SIM_LDS_PORT", default=8102)
LCM_SIM_GRADING_PORT = env.int("LCM_SIM_GRADING_PORT", default=8103)
LCM_SIM_MOTO_PORT = env.int("LCM_SIM_MOTO_PORT", default=8104)
LCM_SIM_OIDC_PORT = env.int("LCM_SIM_OIDC_PORT", default=8105)
# What the simulators' control API (`/_sim/...`) demands in X-Sim-Token; empty = generated at start (SPEC §12).
LCM_SIM_TOKEN = env.str("LCM_SIM_TOKEN", default="")
LCM_SIM_ZERO_DELAY = env.bool("LCM_SIM_ZERO_DELAY", default=False)
LCM_SIM_WEBHOOK_URL = env.str("LCM_SIM_WEBHOOK_URL", default="http://127.0.0.1:8000/api/events")

# --- Control loops (SPEC §1, §4) ---
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")  # unset = in-process task runner (embedded default)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The cache every process shares: Redis (LCM_CACHE_URL, default the Celery broker when it is Redis; keys under
# `lcm:`), else this process's memory (the embedded default: one process, no external service). Over a shared
# Redis the login sessions are read from the cache (`cached_db`: written through to PostgreSQL, a logout deletes
# both), so a live poll costs no session query; a per-process cache never holds sessions (a logout in one
# gunicorn worker would not reach another), they stay in the database alone.
# (Read only to build CACHES, so not a setting of its own.)
_cache_url = env.str("LCM_CACHE_URL", default=CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else "")
if _cache_url:
    CACHES = {
        "default": {
            "BACKEND": "lcm.cache.SharedRedisCache",
            "LOCATION": _cache_url,
            "KEY_PREFIX": "lcm",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    # The live pages' change stamps are read from it too (lcm.live), raised after each commit beside the table.
    LCM_LIVE_SHARED_STAMPS = True
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "lcm"}}
    SESSION_ENGINE = "django.contrib.sessions.backends.db"
    LCM_LIVE_SHARED_STAMPS = False
LCM_ETCD_ENDPOINTS = env.str("LCM_ETCD_ENDPOINTS", default="")  # unset = in-process coordination
LCM_LOOP_PLACEMENT_SECONDS = env.float("LCM_LOOP_PLACEMENT_SECONDS", default=2.0)
# A change that calls for a tick (a new PENDING session: placement) gets one within this many seconds.
LCM_KICK_SPACING_SECONDS = env.float("LCM_KICK_SPACING_SECONDS", default=0.5)
LCM_LOOP_LABLETS_SECONDS = env.float("LCM_LOOP_LABLETS_SECONDS", default=2.0)
LCM_LOOP_WORKERS_SECONDS = env.float("LCM_LOOP_WORKERS_SECONDS", default=5.0)
LCM_LOOP_AUTOSCALER_SECONDS = env.float("LCM_LOOP_AUTOSCALER_SECONDS", default=10.0)
LCM_LOOP_REGRADES_SECONDS = env.float("LCM_LOOP_REGRADES_SECONDS", default=2.0)
# A re-grade that finds no RUNNING worker with room for this long gives up (FAILED, saying why).
LCM_REGRADE_WAIT_MINUTES = env.float("LCM_REGRADE_WAIT_MINUTES", default=60.0)
LCM_LOOP_EVIDENCE_SECONDS = env.float("LCM_LOOP_EVIDENCE_SECONDS", default=300.0)  # retention and orphan sweep
LCM_LOOP_DISCOVERY_SECONDS = env.float("LCM_LOOP_DISCOVERY_SECONDS", default=60.0)  # runs every discovery interval
# Drift (SPEC §11): how often a READY/RUNNING session's lab is checked in CML (one call per session per interval;
# 0 turns the check off).
LCM_DRIFT_CHECK_SECONDS = env.float("LCM_DRIFT_CHECK_SECONDS", default=30.0)
LCM_WORKER_SYNC_SECONDS = env.float("LCM_WORKER_SYNC_SECONDS", default=120.0)  # metrics, CML readiness, lab discovery
LCM_WORKER_READY_TIMEOUT_MINUTES = env.int("LCM_WORKER_READY_TIMEOUT_MINUTES", default=30)  # STARTING → FAILED after
# A launched instance's CML base URL; fields {name} {worker_id} {instance_id} {private_ip} {public_ip} {address}.
# Empty = the CML simulator's virtual worker (<LCM_CML_SIMULATOR_URL>/w/{name}); on EC2 e.g. https://{address}.
LCM_CML_URL_TEMPLATE = env.str("LCM_CML_URL_TEMPLATE", default="")
# Project state changes into coordination and wake the loops after each commit (off in unit tests).
LCM_PROJECTION_ENABLED = env.bool("LCM_PROJECTION_ENABLED", default=True)
LCM_INPROCESS_WORKERS = env.int("LCM_INPROCESS_WORKERS", default=4)
LCM_MAX_RECONCILE_ATTEMPTS = env.int("LCM_MAX_RECONCILE_ATTEMPTS", default=8)
LCM_GRADING_CUT_PERCENT = env.float("LCM_GRADING_CUT_PERCENT", default=70.0)  # pass = score ≥ this % of max

# --- Trouble in sight (SPEC §11): metrics, notifications, charts ---
# Record metrics and serve /metrics; 0 turns both off (bench_lifecycle measures their cost with it).
LCM_METRICS_ENABLED = env.bool("LCM_METRICS_ENABLED", default=True)
# /metrics wants `Authorization: Bearer <token>` when set; unset, it answers loopback clients only.
LCM_METRICS_TOKEN = env.str("LCM_METRICS_TOKEN", default="")
# Where the fleet's utilisation is sampled for the dashboard's 24 h / 7 d chart (and how long samples are kept).
LCM_LOOP_FLEET_SAMPLES_SECONDS = env.float("LCM_LOOP_FLEET_SAMPLES_SECONDS", default=300.0)
# How often new needs-attention items are announced to the notification recipients and webhooks (SPEC §11).
LCM_LOOP_ATTENTION_SECONDS = env.float("LCM_LOOP_ATTENTION_SECONDS", default=30.0)
LCM_FLEET_SAMPLE_DAYS = env.int("LCM_FLEET_SAMPLE_DAYS", default=8)
# Notifications: the loop that delivers them (and retries), the CloudEvents `source`, a link base for emails.
LCM_LOOP_NOTIFICATIONS_SECONDS = env.float("LCM_LOOP_NOTIFICATIONS_SECONDS", default=5.0)
LCM_NOTIFY_MAX_ATTEMPTS = env.int("LCM_NOTIFY_MAX_ATTEMPTS", default=8)
LCM_NOTIFY_BACKOFF_SECONDS = env.float("LCM_NOTIFY_BACKOFF_SECONDS", default=5.0)  # doubled per failed attempt
LCM_NOTIFY_TIMEOUT_SECONDS = env.float("LCM_NOTIFY_TIMEOUT_SECONDS", default=5.0)
LCM_NOTIFY_SOURCE = env.str("LCM_NOTIFY_SOURCE", default="/lcm")
LCM_PUBLIC_URL = env.str("LCM_PUBLIC_URL", default="http://127.0.0.1:8000")

# Outgoing email (notifications) through Django's email backend; the defaults send nothing anywhere but localhost.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="lcm@localhost")

# --- Production refusals (SPEC §12) ---
if not DEBUG:
    # Production refuses to start with empty, short or shipped default secrets (SPEC §6.2, §12), and
    # with the simulators' credentials for a real CML, LDS or Grading Engine (the launcher and compose
    # run these settings against the simulators, so a default is fine while the simulator is the endpoint).
    _sim_hosts = {LCM_SIM_HOST, urlsplit(LCM_CML_SIMULATOR_URL).hostname or ""}
    _unsafe = security.weak_secrets(
        [
            ("DJANGO_SECRET_KEY", SECRET_KEY, INSECURE_SECRET_KEY, security.MIN_SECRET_KEY_LENGTH),
            ("LCM_INTERNAL_API_KEY", INTERNAL_API_KEY, "local-internal-api-key", security.MIN_SHARED_SECRET_LENGTH),
            ("LCM_WEBHOOK_SECRET", WEBHOOK_SECRET, "local-webhook-secret", security.MIN_SHARED_SECRET_LENGTH),
        ]
    ) + security.default_credentials(
        [
            ("LCM_CML_PASSWORD", LCM_CML_PASSWORD, "admin", not LCM_CML_URL_TEMPLATE),
            (
                "LCM_LDS_CLIENT_SECRET",
                LCM_LDS_CLIENT_SECRET,
                "local-lds-secret",
                security.is_simulator_url(LCM_LDS_BASE_URL, _sim_hosts),
            ),
            (
                "LCM_GRADING_CLIENT_SECRET",
                LCM_GRADING_CLIENT_SECRET,
                "local-grading-secret",
                security.is_simulator_url(LCM_GRADING_BASE_URL, _sim_hosts),
            ),
        ]
    )
    _unsafe += security.unsafe_endpoints(
        cml_url_template=LCM_CML_URL_TEMPLATE,
        cml_verify_tls=LCM_CML_VERIFY_TLS,
        oidc_issuer=LCM_OIDC_ISSUER,
        oidc_client_secret=LCM_OIDC_CLIENT_SECRET,
        simulator_hosts=_sim_hosts,
    )
    if _unsafe:
        raise ImproperlyConfigured(security.refusal(_unsafe))

# --- REST API (owned by the REST issue: DRF, auth, OpenAPI settings go below this line) ---
# The largest request body read into memory (Django's default, stated): the API and the webhook answer 413 above it.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First, so a missing or bad credential answers 401 with its WWW-Authenticate header.
        "lcm.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["lcm.api.permissions.IsInstructor"],
    "DEFAULT_PAGINATION_CLASS": "lcm.api.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["lcm.api.filters.FilterBackend"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSONParser with limits (SPEC §12): 413 over DATA_UPLOAD_MAX_MEMORY_SIZE, 400 nested too deep.
    "DEFAULT_PARSER_CLASSES": ["lcm.api.parsers.LimitedJSONParser"],
    # OPTIONS describes nothing the OpenAPI schema does not: answer it 405 like any undocumented method.
    "DEFAULT_METADATA_CLASS": None,
    "DEFAULT_SCHEMA_CLASS": "lcm.api.schema.LcmAutoSchema",
    "EXCEPTION_HANDLER": "lcm.api.exceptions.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "COERCE_DECIMAL_TO_STRING": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Lablet Cloud Manager API",
    "DESCRIPTION": (
        "Book, watch and drive lablet sessions; manage the CML worker fleet (SPEC §5.1). "
        "Authenticate with `Authorization: Token <key>` (or `Bearer <key>`; keys from `manage.py token_create` "
        "or the admin) or a browser session; the internal API takes `X-API-Key`. Errors: 400 `{field: [messages]}`, "
        "401/403/404 `{detail}`, 409 `{detail, code, current_status, allowed}` for a refused transition."
    ),
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": r"/api",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "SessionStatusEnum": "sessions.states.SessionStatus",
        "DefinitionStatusEnum": "sessions.states.DefinitionStatus",
        "UserSessionStatusEnum": "sessions.states.UserSessionStatus",
        "EndReasonEnum": "sessions.states.EndReason",
        "LicenseTypeEnum": "workers.states.LicenseType",
        "WorkerStatusEnum": "workers.states.WorkerStatus",
        "DesiredStatusEnum": "workers.states.DesiredStatus",
        "LicenseStatusEnum": "workers.states.LicenseStatus",
        "LabStatusEnum": "workers.states.LabStatus",
        "GradingStatusEnum": "grading.states.GradingStatus",
    },
}
