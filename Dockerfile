# sayiir-grpc: the gRPC persistence service, as a container image.
#
#   docker build -t sayiir-grpc .
#   docker run -e SAYIIR_DATABASE_URL=postgresql://user:pass@db:5432/sayiir -p 50051:50051 -p 9464:9464 sayiir-grpc
#
# SAYIIR_DATABASE_URL comes from the environment (see deploy/docker-compose.yml).
# Every other setting is a SAYIIR_* variable too (README, "Settings").

# --- builder: build the wheel of this repository -----------------------------
FROM python:3.11-slim AS builder

WORKDIR /src
COPY pyproject.toml README.md ./
COPY common/ common/
COPY client/ client/
COPY server/ server/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# --- runtime: the wheel and its dependencies, run as an unprivileged user ----
# Without the `embedded` extra: the image is given SAYIIR_DATABASE_URL and
# never starts a PostgreSQL of its own.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SAYIIR_LISTEN=0.0.0.0:50051 \
    SAYIIR_METRICS_LISTEN=0.0.0.0:9464 \
    SAYIIR_LOG_FORMAT=json

COPY --from=builder /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin sayiir

USER 10001:10001
WORKDIR /home/sayiir

# gRPC, and Prometheus /metrics.
EXPOSE 50051 9464

# The check asks the address in SAYIIR_LISTEN (0.0.0.0 meaning this host), so
# it follows a port changed with `docker run -e SAYIIR_LISTEN=...`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["sayiir-grpc", "healthcheck", "--timeout", "3"]

ENTRYPOINT ["sayiir-grpc"]
CMD ["serve"]
