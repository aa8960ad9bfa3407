#!/bin/sh
# Container entrypoint: a fresh prometheus multiprocess directory, then Seldon's wrapper.
# Extra arguments go to seldon-core-microservice (e.g. --threads 8).
set -eu
dir="${PROMETHEUS_MULTIPROC_DIR:-/tmp/strata-metrics}"
rm -rf "$dir" && mkdir -p "$dir"
exec python -m seldon_core.microservice workloads.serving.server.StrataModel \
  --service-type MODEL \
  --http-port "${PREDICTIVE_UNIT_HTTP_SERVICE_PORT:-9000}" \
  --grpc-port "${PREDICTIVE_UNIT_GRPC_SERVICE_PORT:-5000}" \
  --metrics-port "${PREDICTIVE_UNIT_METRICS_SERVICE_PORT:-6000}" \
  --workers "${GUNICORN_WORKERS:-1}" --threads "${GUNICORN_THREADS:-8}" \
  --grpc-workers 1 --grpc-threads "${GRPC_THREADS:-8}" \
  "$@"
