"""Django settings for Paddock, read from the environment.

Two shapes run from the same code:

* the embedded default (no ``DATABASE_URL``/``REDIS_URL``): SQLite in WAL mode, an in-process
  Celery broker and channel layer, one process holding web server, worker and host watchers;
* production (``DATABASE_URL`` and ``REDIS_URL`` set): PostgreSQL, Redis as Celery broker and
  channel layer, separate web/worker/beat/watcher processes.

Defaults are the safe production ones (``DEBUG`` off, loopback-only ``ALLOWED_HOSTS``, no made-up
secret key); the demo sets ``PADDOCK_DEMO=1``, which explicitly allows a generated local key.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from panel.datadir import private_file, secure_data_dir

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEMO = env_bool("PADDOCK_DEMO")
DEBUG = env_bool("DEBUG", False)

# Where the embedded database, generated demo secrets and per-host SSH files live.
DATA_DIR = Path(os.environ.get("PADDOCK_DATA_DIR", BASE_DIR / "var"))


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    if not (DEMO or DEBUG):
        raise ImproperlyConfigured(
            "SECRET_KEY must be set (or PADDOCK_DEMO=1 for a local demo with a generated key)."
        )
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


# The data folder holds session keys (SQLite), the secret key and the SSH key: owner-only,
# created so and tightened when found looser (see panel.datadir).
secure_data_dir(DATA_DIR)
SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
# Origins besides the panel's own (scheme, host and port of the request) whose pages may open a
# websocket with the session cookie, e.g. the public origin behind a proxy (panel.wsguard).
PADDOCK_ORIGINS = env_list("PADDOCK_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "panel",
    "hosts",
    "vms",
    "tuning",
    "metrics",
    "paddock",
    "axes",
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last: turns a locked-out log-in (either door) into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "paddock.urls"

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
                "panel.context_processors.shell",
            ],
        },
    },
]

WSGI_APPLICATION = "paddock.wsgi.application"
ASGI_APPLICATION = "paddock.asgi.application"

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Each ASGI request runs in its own thread, so persistent connections are never
        # reused there: a small pool per process keeps connections open and bounded instead.
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": int(os.environ.get("PADDOCK_DB_POOL_MIN", "1")),
            "max_size": int(os.environ.get("PADDOCK_DB_POOL_MAX", "8")),
            "timeout": 10,
        }
else:
    SQLITE_PATH = Path(os.environ.get("PADDOCK_SQLITE_PATH", DATA_DIR / "paddock.sqlite3"))
    private_file(SQLITE_PATH)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(SQLITE_PATH),
            # WAL lets the web server read while the worker writes; IMMEDIATE transactions take
            # the write lock up front so concurrent writers queue instead of failing mid-way.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Brute-force protection (panel.security): axes refuses a locked username or address before any
# password is hashed, at /login/ and at POST /api/auth/token/ alike; at most PASSWORD_CHECKS
# password hashes run at once per process.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "panel.security.BoundedModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("PADDOCK_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("PADDOCK_LOGIN_COOLOFF_MINUTES", "15")))
# Two separate locks: one per username (from any address), one per client address.
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "panel.security.lockout_response"
AXES_VERBOSE = False  # panel.security logs each lockout on "paddock.security"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "ui:datacenter"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
# The embedded server serves static files straight from the source folders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

SESSION_COOKIE_HTTPONLY = True
# "Served over HTTPS": PADDOCK_HTTPS=1 (TLS here or at a proxy), or, behind a TLS-terminating
# proxy, PADDOCK_PROXY_SSL_HEADER names the header it sets to "https" (e.g. X-Forwarded-Proto;
# the proxy must strip it from clients). Then cookies are Secure and HSTS is sent. The embedded
# demo on http://127.0.0.1 sets neither and keeps working.
_PROXY_SSL_HEADER = os.environ.get("PADDOCK_PROXY_SSL_HEADER", "").strip()
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
HTTPS = env_bool("PADDOCK_HTTPS") or bool(_PROXY_SSL_HEADER)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS)
# SecurityMiddleware sends HSTS on secure requests only.
SECURE_HSTS_SECONDS = int(os.environ.get("PADDOCK_HSTS_SECONDS", "31536000")) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("PADDOCK_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_SSL_REDIRECT = HTTPS and env_bool("PADDOCK_SSL_REDIRECT", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "SAMEORIGIN"
# Content-Security-Policy (django-csp 4 format). No page uses inline script or style: scripts
# and styles come from static files only, bar widths are CSS classes. 'self' in connect-src
# also covers ws:/wss: to this host (CSP Level 3), which the console and live updates use.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'self'"],
        "form-action": ["'self'"],
    }
}
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("PADDOCK_MAX_BODY_BYTES", str(1024 * 1024)))
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "panel.authentication.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON only, with a nesting bound (a deep body is a 400, not a recursion error): the schema
    # then advertises one body type per operation, so generated clients work. The one upload
    # endpoint takes its body raw (``hosts.api.views.StreamParser``).
    "DEFAULT_PARSER_CLASSES": ["panel.api.parsers.BoundedJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "panel.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "panel.api.exceptions.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Paddock API",
    "DESCRIPTION": "Every action of the Paddock panel: hosts, storage, networks, VMs, tasks, tenancy.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Path ids (panel.bounds.IdPathConverter) and snapshot names, as the converters take them.
    "PATH_CONVERTER_OVERRIDES": {
        "id": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        "name": {"type": "string", "pattern": "^[^/\\x00-\\x1f]+$"},
    },
    "ENUM_NAME_OVERRIDES": {
        "VmStateEnum": "vms.choices.VMState",
        "TaskStateEnum": "panel.choices.TaskState",
        "HostStatusEnum": "hosts.choices.HostStatus",
        "RoleEnum": "panel.choices.Role",
    },
}

REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED = not REDIS_URL

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Redis pub/sub: an event reaches each web process once, and the process hands it to
            # its own clients (the list-based layer pops one Redis message per client: 500
            # round trips for one event on a VM with 500 viewers). docs/events.md, "Fan-out".
            "BACKEND": os.environ.get(
                "PADDOCK_CHANNEL_LAYER", "channels_redis.pubsub.RedisPubSubChannelLayer"
            ),
            # redis-py 8 times out idle socket reads after 5 s, shorter than channels-redis's
            # blocking receive: without a longer timeout an idle websocket consumer crashes.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery. Infrastructure tasks must neither vanish with a dying worker nor run twice:
# * acks_late + reject_on_worker_lost: a message is acknowledged only after the task returns,
#   so a worker killed mid-task leaves the message to be redelivered, not lost;
# * prefetch 1: a worker holds at most one unstarted message, so a dead worker strands nothing;
# * the task row is claimed with a compare-and-swap (queued -> running) before anything touches
#   a host, so a redelivered or duplicated message finds the row no longer queued and does nothing.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "paddock"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_BEAT_SCHEDULE = {
    # A dead worker's task is resolved within a lease (20 s) and one sweep (5 s).
    "recover-stale-tasks": {"task": "panel.tasks.recover_stale_tasks", "schedule": 5.0},
    "resend-lost-tasks": {"task": "panel.tasks.resend_lost_tasks", "schedule": 10.0},
}

PADDOCK = {
    # Seconds a running task's lease lasts without renewal before recovery may take it over.
    # The worker renews it every quarter of that from its own thread, whatever the task does.
    "TASK_LEASE_SECONDS": int(os.environ.get("PADDOCK_TASK_LEASE_SECONDS", "20")),
    # Seconds to wait for a host to answer when connecting.
    "CONNECT_TIMEOUT": int(os.environ.get("PADDOCK_CONNECT_TIMEOUT", "15")),
    # Seconds between the watcher's reconcile rounds (what an event may have missed).
    "RECONCILE_SECONDS": float(os.environ.get("PADDOCK_RECONCILE_SECONDS", "30")),
    # A watcher process's fixed threads, whatever its number of hosts: openers open host
    # connections (each under the call deadline), appliers do the database work of the events
    # (one database connection each while busy). With the reconcile loop, the metrics
    # collector and the rescan, a watcher process needs WATCHER_APPLIERS + 3 database
    # connections: PADDOCK_DB_POOL_MAX must be at least that (docs/events.md).
    "WATCHER_OPENERS": int(os.environ.get("PADDOCK_WATCHER_OPENERS", "8")),
    "WATCHER_APPLIERS": int(os.environ.get("PADDOCK_WATCHER_APPLIERS", "4")),
    # Seconds between metric collections; how often the minute/hour/day rings are saved to
    # the database (0: only at shutdown).
    "METRICS_INTERVAL": float(os.environ.get("PADDOCK_METRICS_INTERVAL", "10")),
    "METRICS_CHECKPOINT": float(os.environ.get("PADDOCK_METRICS_CHECKPOINT", "3600")),
    # /metrics is closed by default: the scrape token (``Authorization: Bearer``) opens it, and
    # so does an address allow-list, only when one is configured.
    "METRICS_TOKEN": os.environ.get("PADDOCK_METRICS_TOKEN", ""),
    "METRICS_ALLOW": os.environ.get("PADDOCK_METRICS_ALLOW", ""),
    # Folders test-driver node files (test:///path.xml) may be read from: the shipped fixtures
    # unless configured. Anything else is refused, so no URI makes libvirt read a file.
    "TEST_NODE_DIRS": env_list("PADDOCK_TEST_NODE_DIRS", str(BASE_DIR / "hosts" / "fixtures")),
    # How many times its free space a thin pool may promise to new qcow2 volumes (they take
    # what is written); full-size volumes always fit the free space (hosts.storage.backends).
    "THIN_OVERCOMMIT": float(os.environ.get("PADDOCK_THIN_OVERCOMMIT", "1")),
    # POST /api/auth/token/ rates (DRF throttles, before any password check), per client
    # address and per username; password hashes running at once per process, and how long
    # an attempt waits for one (panel.security).
    "TOKEN_RATE_ADDRESS": os.environ.get("PADDOCK_TOKEN_RATE_ADDRESS", "20/min"),
    "TOKEN_RATE_USERNAME": os.environ.get("PADDOCK_TOKEN_RATE_USERNAME", "10/min"),
    # Default: half the CPUs, so a flood of wrong passwords leaves the other half to everyone else.
    "PASSWORD_CHECKS": int(
        os.environ.get("PADDOCK_PASSWORD_CHECKS") or max(1, (os.cpu_count() or 2) // 2)
    ),
    # Largest request body outside the upload endpoints, checked in the ASGI path before any
    # byte is read (panel.bodylimit); Django's own limits match it.
    "MAX_BODY_BYTES": int(os.environ.get("PADDOCK_MAX_BODY_BYTES", str(1024 * 1024))),
    "PASSWORD_CHECK_WAIT": float(os.environ.get("PADDOCK_PASSWORD_CHECK_WAIT", "10")),
    # Private key Paddock uses for qemu+ssh hosts.
    "SSH_KEY": os.environ.get("PADDOCK_SSH_KEY", str(DATA_DIR / "ssh" / "id_ed25519")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # axes logs every failed attempt at INFO; lockouts are logged on "paddock.security".
        "axes": {"level": "WARNING"},
    },
}
