"""Django settings, read from the environment.

Unset variables give the embedded default: one process, SQLite, no Redis, no Firestore. The
project's own knobs live in one namespaced dict, ``REALTIME`` (read through
``realtime_project.conf.realtime_settings``, which declares each key's type: a new key goes
there too). The README's configuration table lists every variable.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from realtime_project.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_ip_networks,
    env_list,
    env_optional_str,
    env_processes,
    env_str,
)
from realtime_project.redis_topology import RedisPlacement
from realtime_project.secret_key import embedded_secret_key, secret_key_check

BASE_DIR = Path(__file__).resolve().parent.parent
# What the embedded default writes at run time (the SQLite file, the kept secret key) goes
# under one folder: the project's own by default, the image's volume `/data` there (its code
# belongs to root, and the process runs as an unprivileged user that cannot write it).
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR)))

_REDIS_URL = env_optional_str("REDIS_URL")
# Several instances must share one key (sessions, signed values): a key made up by each
# process would not do, so they refuse to start without one. One process alone makes a
# random key once and keeps it in a git-ignored file.
_SECRET_KEY = env_optional_str("SECRET_KEY")
SECRET_KEY = (
    secret_key_check(_SECRET_KEY, several_instances=_REDIS_URL is not None)
    if _SECRET_KEY
    else embedded_secret_key(
        path=Path(env_str("SECRET_KEY_FILE", str(DATA_DIR / ".secret-key"))),
        several_instances=_REDIS_URL is not None,
    )
)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
# Origins other than a request's own from which a cookie may act: Django's CSRF check for
# forms, and the origin check of session-cookie sockets (accounts/auth.py).
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "connections",
    "accounts",
    "presence",
    "webhooks",
    "chat",
    "health",
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
]

ROOT_URLCONF = "realtime_project.urls"
# REST paths are served with and without a trailing slash; never redirect between them.
APPEND_SLASH = False

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
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "realtime_project.asgi.application"


def _database(url: str) -> dict[str, Any]:
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(url))
    except Exception as exc:  # dj_database_url raises bare ValueError/KeyError variants
        raise ImproperlyConfigured(f"DATABASE_URL is not a usable database URL: {exc}") from None
    if config.get("ENGINE") == "django.db.backends.sqlite3":
        # Several threads (sync views, consumers' database_sync_to_async) share the file.
        config.setdefault("OPTIONS", {})["timeout"] = 20
    elif config.get("ENGINE") == "django.db.backends.postgresql" and env_bool(
        "DATABASE_POOL", True
    ):
        # Under ASGI every database_sync_to_async call closes "old" connections, so without a
        # pool each socket's query opened a new PostgreSQL connection (a fifth of a busy
        # instance's time in connect). psycopg's pool hands them back instead.
        config.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": env_int("DATABASE_POOL_MAX_SIZE", 20, minimum=1),
            "timeout": 10,
        }
    return config


DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}")
DATABASES = {"default": _database(DATABASE_URL)}
# Threads for the consumers' database calls (realtime_project/database.py). SQLite takes one
# writer at a time, so it keeps Channels' one thread-sensitive thread (0).
_DATABASE_THREADS_DEFAULT = (
    8 if DATABASES["default"].get("ENGINE") == "django.db.backends.postgresql" else 0
)
_DATABASE_ASYNC_DEFAULT = (
    4 if DATABASES["default"].get("ENGINE") == "django.db.backends.postgresql" else 0
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# WhiteNoise indexes STATIC_ROOT at start and warns when it is missing (before collectstatic).
STATIC_ROOT.mkdir(exist_ok=True)
# Serve static files straight from the apps when collectstatic has not been run (the embedded
# default); the Docker image runs collectstatic and serves the compressed, hashed copies.
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", True)

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header turns "not authenticated" into 401.
        "accounts.tokens.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # REST writes per user at the WebSocket frame rate, on the shared cache (docs/auth.md).
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttles.UserWriteThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Realtime backbone API",
    "DESCRIPTION": "REST alternatives to the WebSocket frames, conversations, presence, "
    "connections and health. The WebSocket protocol is described in docs/protocol.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Paths as the contract writes them: routes accept an optional trailing slash.
    "PREPROCESSING_HOOKS": ["chat.schema.strip_trailing_slashes"],
    # Swagger UI from our own static files: the docs page works offline and under a strict CSP.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Presence's and an instance's "status" are different choice sets; name each.
    "ENUM_NAME_OVERRIDES": {
        "PresenceStatusEnum": "presence.store.STATUSES",
        "InstanceStatusEnum": "connections.views.INSTANCE_STATUSES",
    },
}

# The project's own settings. Everything has a default; everything can be overridden by the
# environment variable of the same name.
REALTIME: dict[str, Any] = {
    "INSTANCE_ID": env_str("INSTANCE_ID", f"{socket.gethostname()}-{os.getpid()}"),
    # Unset: single-instance mode (local-only layer, in-memory registry and timers).
    # Several comma-separated URLs spread groups over the nodes by a consistent hash.
    "REDIS_URL": _REDIS_URL,
    # Redis Sentinel: "host:port,host:port" plus the monitored master's name.
    "REDIS_SENTINELS": env_list("REDIS_SENTINELS", []),
    "REDIS_SENTINEL_MASTER": env_str("REDIS_SENTINEL_MASTER", "mymaster"),
    # A Redis Cluster: REDIS_URL names one or more seed nodes (docs/topology.md).
    "REDIS_CLUSTER": env_bool("REDIS_CLUSTER", False),
    # Timeouts for Redis commands; blocking reads always use a shorter one (see docs).
    "REDIS_SOCKET_TIMEOUT_SECONDS": env_float("REDIS_SOCKET_TIMEOUT_SECONDS", 5.0, minimum=0.1),
    "REDIS_CONNECT_TIMEOUT_SECONDS": env_float("REDIS_CONNECT_TIMEOUT_SECONDS", 2.0, minimum=0.1),
    # Unset: presence is kept by the embedded in-process store.
    "FIRESTORE_PROJECT_ID": env_optional_str("FIRESTORE_PROJECT_ID"),
    "PRESENCE_COLLECTION": env_str("PRESENCE_COLLECTION", "users"),
    "PRESENCE_GRACE_SECONDS": env_float("PRESENCE_GRACE_SECONDS", 30, minimum=0),
    # How often each instance claims due offline deadlines (docs/presence.md).
    "PRESENCE_DEADLINE_POLL_SECONDS": env_float(
        "PRESENCE_DEADLINE_POLL_SECONDS", 1.0, minimum=0.01
    ),
    # How often users stored as online are checked against the registry (lost deadlines).
    "PRESENCE_RECONCILE_SECONDS": env_float("PRESENCE_RECONCILE_SECONDS", 60, minimum=0.05),
    # One Firestore call; failed transitions are retried with backoff up to the maximum.
    "PRESENCE_STORE_TIMEOUT_SECONDS": env_float(
        "PRESENCE_STORE_TIMEOUT_SECONDS", 2.0, minimum=0.05
    ),
    "PRESENCE_RETRY_MAX_SECONDS": env_float("PRESENCE_RETRY_MAX_SECONDS", 10, minimum=0.01),
    # Who hears about a user's presence: a dotted path to a callable (user_id) -> user ids.
    "PRESENCE_AUDIENCE": env_str("PRESENCE_AUDIENCE", "chat.selectors.presence_audience"),
    "CONNECTION_TTL_SECONDS": env_float("CONNECTION_TTL_SECONDS", 60, minimum=1),
    "HEARTBEAT_INTERVAL_SECONDS": env_float("HEARTBEAT_INTERVAL_SECONDS", 20, minimum=0.1),
    "MESSAGE_MAX_LENGTH": env_int("MESSAGE_MAX_LENGTH", 4000, minimum=1),
    "WS_MAX_FRAME_BYTES": env_int("WS_MAX_FRAME_BYTES", 64 * 1024, minimum=256),
    # What the server may hold unsent for one socket (a client that stops reading); past it,
    # the socket is closed with 4008 (realtime_project/runtime/daphne.py).
    "WS_MAX_BUFFERED_BYTES": env_int("WS_MAX_BUFFERED_BYTES", 2 * 1024 * 1024, minimum=4096),
    # A socket whose unsent bytes stay over that bound this long has stopped reading: 4008.
    "WS_SEND_STALL_SECONDS": env_float("WS_SEND_STALL_SECONDS", 5.0, minimum=0.1),
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or networks):
    # the load balancer. Anyone else's are ignored (realtime_project/runtime/proxy_headers.py).
    "TRUSTED_PROXIES": env_ip_networks("TRUSTED_PROXIES", ["127.0.0.1", "::1"]),
    "MAX_SOCKETS_PER_USER": env_int("MAX_SOCKETS_PER_USER", 20, minimum=1),
    "TYPING_TIMEOUT_SECONDS": env_float("TYPING_TIMEOUT_SECONDS", 6, minimum=0.1),
    # The consumers' database calls run on this many threads, each with its own pooled
    # connection (keep DATABASE_POOL_MAX_SIZE above it); 0: Channels' one thread.
    "DATABASE_THREADS": env_int("DATABASE_THREADS", _DATABASE_THREADS_DEFAULT, minimum=0),
    # PostgreSQL: the hottest writes and reads (a message, a connect's positions) run on
    # psycopg's async connections in the event loop itself, this many per loop; 0 keeps them
    # on the database threads (realtime_project/database.py).
    "DATABASE_ASYNC_CONNECTIONS": env_int(
        "DATABASE_ASYNC_CONNECTIONS", _DATABASE_ASYNC_DEFAULT, minimum=0
    ),
    # While all of them are lent, messages wait, and a connection that frees writes up to this
    # many of them in one transaction (group commit, chat/message_writes.py); 1 writes each
    # alone.
    "MESSAGE_BATCH_MAX": env_int("MESSAGE_BATCH_MAX", 32, minimum=1),
    # The youngest generation of Python's garbage collector, in allocations (the interpreter's
    # default is 700); 0 keeps the interpreter's defaults (realtime_project/runtime/collector.py).
    "GC_GEN0_THRESHOLD": env_int("GC_GEN0_THRESHOLD", 20000, minimum=0),
    # glibc malloc's arenas when started through realtime_project.runtime.serve: one a thread
    # by default, whose free space the RSS keeps; 0 leaves glibc's own limit
    # (realtime_project/runtime/malloc.py). glibc reads the same variable itself at start.
    "MALLOC_ARENA_MAX": env_int("MALLOC_ARENA_MAX", 2, minimum=0),
    # The event loop Daphne and Twisted run on when started through
    # realtime_project.runtime.serve: uvloop's, or the standard library's ("asyncio").
    "EVENT_LOOP": env_choice("EVENT_LOOP", "uvloop", {"uvloop", "asyncio"}),
    # Daphne processes serving the instance's port (realtime_project.runtime.serve): each is an
    # instance of its own to the registry; "auto" is one per core this process may run on
    # (docs/scaling.md).
    "PROCESSES": env_processes("PROCESSES", 1),
    # Admission (accounts/admission.py): a connect waits at most CONNECT_MAX_WAIT_MS for
    # its answer (admitted while the queue ahead is worth half of it at the measured connect
    # rate; otherwise 1013 with a retry hint of at most CONNECT_RETRY_MAX_MS), and never more
    # than CONNECT_MAX_IN_FLIGHT connects run at once per event loop, whatever the rate says.
    # The hint's ceiling is high: one below the instance's real pace (a machine far slower
    # than expected) brings clients back too early, each return another handshake to refuse.
    "CONNECT_MAX_IN_FLIGHT": env_int("CONNECT_MAX_IN_FLIGHT", 1000, minimum=1),
    "CONNECT_MAX_WAIT_MS": env_int("CONNECT_MAX_WAIT_MS", 1000, minimum=50),
    "CONNECT_RETRY_MAX_MS": env_int("CONNECT_RETRY_MAX_MS", 30000, minimum=250),
    # Per-socket token bucket for client frames; a socket that keeps flooding is closed 4429.
    "RATE_LIMIT_FRAMES_PER_SECOND": env_float("RATE_LIMIT_FRAMES_PER_SECOND", 20, minimum=0.1),
    "RATE_LIMIT_BURST": env_int("RATE_LIMIT_BURST", 40, minimum=1),
    "RATE_LIMIT_MAX_STRIKES": env_int("RATE_LIMIT_MAX_STRIKES", 20, minimum=1),
    # Per-socket queue in the channel layer; a socket whose queue overflows is closed 4008.
    "CHANNEL_CAPACITY": env_int("CHANNEL_CAPACITY", 1000, minimum=1),
    # How long the layer keeps a group subscribed after its last local member left (a
    # reconnect re-joins it without a SUBSCRIBE, a disconnect costs no UNSUBSCRIBE), and how
    # many groups may linger at once per Redis node and event loop (0 for either: no linger).
    "LAYER_GROUP_LINGER_SECONDS": env_float("LAYER_GROUP_LINGER_SECONDS", 30, minimum=0),
    "LAYER_GROUP_LINGER_MAX": env_int("LAYER_GROUP_LINGER_MAX", 10000, minimum=0),
    # Delivery (docs/delivery.md): the most events one resume (or one events page) replays,
    # and how often each instance checks its sockets against the event log.
    "RESUME_MAX_EVENTS": env_int("RESUME_MAX_EVENTS", 1000, minimum=1),
    "HEAL_INTERVAL_SECONDS": env_float("HEAL_INTERVAL_SECONDS", 2.0, minimum=0.05),
    # Membership caps: participants of one conversation, conversations of one user (each is
    # a group every socket of that user joins).
    "CONVERSATION_MAX_PARTICIPANTS": env_int("CONVERSATION_MAX_PARTICIPANTS", 1000, minimum=2),
    "USER_MAX_CONVERSATIONS": env_int("USER_MAX_CONVERSATIONS", 1000, minimum=1),
    # Who may put whom in a conversation: a dotted path to a callable (adder_id=, user_ids=)
    # -> the ids allowed; the others answer as unknown ids do (docs/auth.md).
    "PARTICIPANT_ADD_POLICY": env_str(
        "PARTICIPANT_ADD_POLICY", "chat.services.participants_anyone"
    ),
    "DRAIN_DELAY_SECONDS": env_float("DRAIN_DELAY_SECONDS", 5, minimum=0),
    # Rebalancing (docs/scaling.md): an instance above ceil(mean * (1 + threshold)) of the live
    # instances' sockets closes the surplus with 1012, at most CLOSE_RATE a second (0: never).
    "REBALANCE_THRESHOLD": env_float("REBALANCE_THRESHOLD", 0.25, minimum=0),
    "REBALANCE_MIN_SURPLUS": env_int("REBALANCE_MIN_SURPLUS", 10, minimum=1),
    # Off (0) for a bare process, which may be placed by hand (tests, benchmarks); the image
    # and the shipped manifests turn it on (docs/scaling.md).
    "REBALANCE_CLOSE_RATE": env_float("REBALANCE_CLOSE_RATE", 0, minimum=0),
    "REBALANCE_INTERVAL_SECONDS": env_float("REBALANCE_INTERVAL_SECONDS", 5, minimum=0.1),
    # Draining (docs/health.md): sockets closed with 1012 in batches, at most CLOSE_RATE a
    # second (0: back to back), a pace the rest of the fleet answers without a queue.
    "DRAIN_BATCH_SIZE": env_int("DRAIN_BATCH_SIZE", 50, minimum=1),
    "DRAIN_CLOSE_RATE": env_float("DRAIN_CLOSE_RATE", 50, minimum=0),
    # "staff": /metrics wants ``Authorization: Bearer <METRICS_TOKEN>`` or a staff session.
    "METRICS_ACCESS": env_choice("METRICS_ACCESS", "staff", {"open", "staff"}),
    "METRICS_TOKEN": env_optional_str("METRICS_TOKEN"),
    # How long /metrics reuses one scrape's registry round trips.
    "METRICS_CACHE_SECONDS": env_float("METRICS_CACHE_SECONDS", 2.0, minimum=0),
    # Tokens (docs/auth.md): lifetime, and how often each instance re-checks all its sockets'
    # tokens, sessions and users in the database (the authority sweep). Above about 1 s, what
    # no message announces (bulk updates, session expiry, a Redis outage) misses the 2 s the
    # contract allows.
    "TOKEN_TTL_SECONDS": env_float("TOKEN_TTL_SECONDS", 30 * 24 * 3600, minimum=1),
    "TOKEN_RECHECK_SECONDS": env_float("TOKEN_RECHECK_SECONDS", 1.0, minimum=0.05),
    # Valid tokens each instance keeps so that a reconnect costs no query (0: no cache), and
    # how long one is served before it is read from the database again.
    "TOKEN_CACHE_SIZE": env_int("TOKEN_CACHE_SIZE", 10000, minimum=0),
    "TOKEN_CACHE_SECONDS": env_float("TOKEN_CACHE_SECONDS", 300, minimum=0),
    # Failed POST /api/auth/token attempts within a minute, per username and per address.
    "AUTH_FAILURES_PER_MINUTE": env_int("AUTH_FAILURES_PER_MINUTE", 10, minimum=1),
    "AUTH_FAILURES_PER_ADDRESS_PER_MINUTE": env_int(
        "AUTH_FAILURES_PER_ADDRESS_PER_MINUTE", 30, minimum=1
    ),
    # What the per-username failure counter is keyed on: "username" (the contract: anyone's
    # failures lock the name) or "username_address" (a stranger's failures cannot lock the
    # owner out from their own address; docs/auth.md weighs the two).
    "AUTH_LOCKOUT_SCOPE": env_choice(
        "AUTH_LOCKOUT_SCOPE", "username", {"username", "username_address"}
    ),
    "HEALTH_TIMEOUT_SECONDS": env_float("HEALTH_TIMEOUT_SECONDS", 1.0, minimum=0.05),
    "HEALTH_CACHE_SECONDS": env_float("HEALTH_CACHE_SECONDS", 0.5, minimum=0),
    # Webhooks (docs/webhooks.md). No URLs: nothing is written to the outbox at all.
    "WEBHOOK_URLS": env_list("WEBHOOK_URLS", []),
    "WEBHOOK_SECRET": env_optional_str("WEBHOOK_SECRET"),
    # How long an undelivered event is retried before it is counted as expired.
    "WEBHOOK_MAX_AGE_SECONDS": env_float("WEBHOOK_MAX_AGE_SECONDS", 86400, minimum=1),
    "WEBHOOK_BATCH_SIZE": env_int("WEBHOOK_BATCH_SIZE", 500, minimum=1),
    "WEBHOOK_TIMEOUT_SECONDS": env_float("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=0.1),
    # A sender's claim on a batch; past it (the sender died mid-call) another instance sends.
    "WEBHOOK_LEASE_SECONDS": env_float("WEBHOOK_LEASE_SECONDS", 30, minimum=0.2),
    # Retries: full jitter over base * 2^attempts, capped.
    "WEBHOOK_BACKOFF_BASE_SECONDS": env_float("WEBHOOK_BACKOFF_BASE_SECONDS", 1, minimum=0.01),
    "WEBHOOK_BACKOFF_MAX_SECONDS": env_float("WEBHOOK_BACKOFF_MAX_SECONDS", 300, minimum=0.01),
    # How often an idle sender looks at the outbox.
    "WEBHOOK_POLL_SECONDS": env_float("WEBHOOK_POLL_SECONDS", 0.5, minimum=0.01),
}

# A receiver must be able to tell our calls from anyone's: no URLs without a secret, and a
# lease that outlives one call (else a slow receiver would get every batch twice).
if REALTIME["WEBHOOK_URLS"] and not REALTIME["WEBHOOK_SECRET"]:
    raise ImproperlyConfigured("WEBHOOK_SECRET is required when WEBHOOK_URLS is set")
if REALTIME["WEBHOOK_LEASE_SECONDS"] <= REALTIME["WEBHOOK_TIMEOUT_SECONDS"]:
    raise ImproperlyConfigured("WEBHOOK_LEASE_SECONDS must be longer than WEBHOOK_TIMEOUT_SECONDS")

# One description of where Redis is, for the layer, the registry, presence, the cache and
# health (realtime_project/redis_topology.py; connections/topology.py adds the clients).
REDIS_TOPOLOGY = RedisPlacement.from_values(
    redis_url=REALTIME["REDIS_URL"],
    sentinels=REALTIME["REDIS_SENTINELS"],
    sentinel_master=REALTIME["REDIS_SENTINEL_MASTER"],
    cluster=REALTIME["REDIS_CLUSTER"],
    socket_timeout=REALTIME["REDIS_SOCKET_TIMEOUT_SECONDS"],
    connect_timeout=REALTIME["REDIS_CONNECT_TIMEOUT_SECONDS"],
)

# The throttles' counters (accounts/throttles.py) must be shared by every instance: on the
# topology's Redis (Sentinel and Cluster too) when there is one, else this process's memory.
CACHES: dict[str, Any] = {"default": REDIS_TOPOLOGY.cache_config()}

# HTTPS: on unless DEBUG; SECURE_COOKIES=false for a deployment served over plain http
# (the loopback demo and the tests). HSTS only where cookies are secure.
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if SECURE_COOKIES else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"


# The custom layer (docs/channel-layer.md); without Redis it runs local-only.
_LAYER_CONFIG: dict[str, Any] = REDIS_TOPOLOGY.layer_config()
_LAYER_CONFIG.update(
    socket_timeout=REALTIME["REDIS_SOCKET_TIMEOUT_SECONDS"],
    connect_timeout=REALTIME["REDIS_CONNECT_TIMEOUT_SECONDS"],
    capacity=REALTIME["CHANNEL_CAPACITY"],
    instance_id=REALTIME["INSTANCE_ID"],
    group_linger=REALTIME["LAYER_GROUP_LINGER_SECONDS"],
    group_linger_max=REALTIME["LAYER_GROUP_LINGER_MAX"],
)
CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "realtime_layer.RealtimeChannelLayer", "CONFIG": _LAYER_CONFIG},
}
# Another layer in place of ours, for comparisons (bench/e2e): a dotted class path such as
# channels_redis.pubsub.RedisPubSubChannelLayer, given REDIS_URL the way channels_redis takes it.
_LAYER_BACKEND = env_optional_str("CHANNEL_LAYER_BACKEND")
if _LAYER_BACKEND and CHANNEL_LAYERS["default"]["BACKEND"] != _LAYER_BACKEND:
    _hosts: dict[str, Any] = {"hosts": [REALTIME["REDIS_URL"]]} if REALTIME["REDIS_URL"] else {}
    CHANNEL_LAYERS = {"default": {"BACKEND": _LAYER_BACKEND, "CONFIG": _hosts}}

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# "kv": key=value lines with the instance id (realtime_project/runtime/logging.py);
# "json": one object a line.
LOG_FORMAT = env_choice("LOG_FORMAT", "kv", {"kv", "json", "plain"})
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"instance": {"()": "realtime_project.runtime.logging.InstanceFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "kv": {"()": "realtime_project.runtime.logging.KeyValueFormatter"},
        "json": {"()": "realtime_project.runtime.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["instance"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
