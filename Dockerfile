# syntax=docker/dockerfile:1
#
# Flowdeck API / worker image.
#   docker build -t flowdeck .
#   docker run -p 8000:8000 -e DATABASE_URL=postgresql://... -e FLOWDECK_SECRET_KEY=... flowdeck

# ---- build stage: install the package and its dependencies into a virtualenv ----
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# Only what installation needs. Migrations live in app/migrations (package data;
# alembic.ini points at app:migrations), so there's no top-level alembic/ directory to copy.
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY schema ./schema
COPY bench ./bench
RUN pip install --no-cache-dir .

# ---- runtime stage: the virtualenv plus a non-root user, no build leftovers ----
FROM python:3.11-slim AS runtime

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLOWDECK_ENV=production \
    FLOWDECK_HOST=0.0.0.0 \
    FLOWDECK_PORT=8000 \
    FLOWDECK_DATA_DIR=/var/lib/flowdeck

RUN groupadd --system --gid 10001 flowdeck \
    && useradd --system --uid 10001 --gid flowdeck --create-home --home-dir /home/flowdeck \
       --shell /usr/sbin/nologin flowdeck \
    && mkdir -p /var/lib/flowdeck /app \
    && chown flowdeck:flowdeck /var/lib/flowdeck

COPY --from=builder /opt/venv /opt/venv
# Handy for running `alembic` by hand; `flowdeck migrate` does not need it.
COPY --from=builder /src/alembic.ini /app/alembic.ini

WORKDIR /app
USER flowdeck

EXPOSE 8000

# slim has no curl: probe with the standard library (urlopen raises on non-2xx -> exit 1),
# on the port serve listens on (FLOWDECK_PORT, as the container runs it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FLOWDECK_PORT', '8000'), timeout=4)"]

# The API only, on FLOWDECK_HOST:FLOWDECK_PORT; the same image runs workers:
# `flowdeck worker` (see docker-compose.yml).
CMD ["flowdeck", "serve", "--no-worker"]
