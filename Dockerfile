# One API instance: Daphne serving realtime_project.asgi:application. See docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=realtime_project.settings \
    WHITENOISE_USE_FINDERS=false \
    REBALANCE_CLOSE_RATE=10

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files are collected at build time and served (compressed, hashed) by WhiteNoise.
RUN python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
    && chown -R app:app /app/staticfiles
# Numeric, so the platform can check it is not root without reading /etc/passwd.
USER 10001

EXPOSE 8000
# The balancer probes the same endpoint (deploy/haproxy.cfg); 503 while draining.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4)"]

# backlog=1024: Twisted's default of 50 overflows under bursts of reconnects.
# --ping-interval 20: well below the balancer's tunnel timeout, so idle sockets stay up.
# Exec form: Daphne is PID 1 and receives SIGTERM itself, which drains the instance.
CMD ["daphne", "-e", "tcp:port=8000:interface=0.0.0.0:backlog=1024", \
     "--ping-interval", "20", "--ping-timeout", "30", \
     "realtime_project.asgi:application"]
