# One API instance: Daphne serving realtime_project.asgi:application. See docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=realtime_project.settings \
    WHITENOISE_USE_FINDERS=false \
    REBALANCE_CLOSE_RATE=10 \
    DATA_DIR=/data

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files are collected at build time and served (compressed, hashed) by WhiteNoise.
# The code stays root's (the process cannot change it); what the process writes goes to /data
# alone: the SQLite file and the kept secret key of the embedded default (DATA_DIR).
# collectstatic signs nothing: a placeholder key keeps settings from making one and leaving
# it in the image, where every container would share it and the app user could not read it.
RUN SECRET_KEY=collectstatic-at-build-time-signs-nothing python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data
VOLUME /data
# Numeric, so the platform can check it is not root without reading /etc/passwd.
USER 10001

EXPOSE 8000
# The balancer probes the same endpoint (deploy/haproxy.cfg); 503 while draining.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4)"]

# backlog=1024: Twisted's default of 50 overflows under bursts of reconnects.
# --ping-interval 20: well below the balancer's tunnel timeout, so idle sockets stay up.
# Exec form, and the entrypoint execs it: Daphne is PID 1 and receives SIGTERM itself, which
# drains the instance. The entrypoint migrates the embedded default's SQLite file first.
ENTRYPOINT ["/app/deploy/image/entrypoint"]
# realtime_project.runtime.serve is Daphne's command line on uvloop (EVENT_LOOP, docs/health.md).
CMD ["python", "-m", "realtime_project.runtime.serve", \
     "-e", "tcp:port=8000:interface=0.0.0.0:backlog=1024", \
     "--ping-interval", "20", "--ping-timeout", "30", \
     "realtime_project.asgi:application"]
