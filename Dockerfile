# syntax=docker/dockerfile:1
#
# tornchat appliance image.
#
#   docker build -t tornchat .
#   docker run --rm -p 4004:4004 -e ACCESS_TOKEN_SECRET="$(openssl rand -hex 32)" tornchat
#
# Stage 1 builds a virtualenv with tornchat and its dependencies; stage 2 copies
# only that virtualenv onto a clean slim base, so no compiler, pip cache or
# source tree ends up in the runtime image. Both stages use the same base so the
# virtualenv's absolute interpreter paths stay valid.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/tornchat

WORKDIR /src
COPY . .
RUN /opt/tornchat/bin/pip install --no-cache-dir . \
    && /opt/tornchat/bin/tornchat --help > /dev/null


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="tornchat" \
      org.opencontainers.image.description="Real-time WebSocket chat service (Tornado)" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric uid/gid so Kubernetes runAsNonRoot can verify it and volume
# ownership is predictable; the working directory holds the SQLite file when no
# DATABASE_URL is given.
RUN groupadd --system --gid 10001 tornchat \
    && useradd --system --uid 10001 --gid tornchat --no-create-home \
       --home-dir /var/lib/tornchat --shell /usr/sbin/nologin tornchat \
    && install -d -o tornchat -g tornchat -m 0750 /var/lib/tornchat

COPY --from=build /opt/tornchat /opt/tornchat

# Defaults only: every setting is overridden with `docker run -e` /
# compose `environment:`; ACCESS_TOKEN_SECRET must be supplied (>= 32 bytes).
ENV PATH=/opt/tornchat/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=4004 \
    TORNCHAT_HOST=0.0.0.0 \
    TORNCHAT_ENV=production \
    LOG_LEVEL=info

WORKDIR /var/lib/tornchat
USER 10001:10001
EXPOSE 4004

# No curl in the slim image: the package ships its own probe (GET /health).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["tornchat", "healthcheck"]

# Exec form: tornchat is PID 1 and receives SIGTERM itself, so it drains
# WebSockets (server_shutdown, close 1001) within TORNCHAT_SHUTDOWN_TIMEOUT.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tornchat"]
CMD ["serve"]
