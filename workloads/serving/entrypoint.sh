#!/bin/sh
# Container entrypoint: a fresh prometheus multiprocess directory, then Seldon's wrapper under
# our server settings (workloads.serving.app). The operator passes the model parameters and
# ports (PREDICTIVE_UNIT_*); workers, threads and the queue budget come from the model spec
# (STRATA_SERVING_*, set by infra/models/serving.py). A pod binds all interfaces (its IP);
# local mode binds 127.0.0.1. Extra arguments go to workloads.serving.app.
set -eu
dir="${PROMETHEUS_MULTIPROC_DIR:-/tmp/strata-metrics}"
rm -rf "$dir" && mkdir -p "$dir"
exec python -m workloads.serving.app workloads.serving.server.StrataModel \
  --host "${STRATA_SERVING_HOST:-0.0.0.0}" \
  --http-port "${PREDICTIVE_UNIT_HTTP_SERVICE_PORT:-9000}" \
  --grpc-port "${PREDICTIVE_UNIT_GRPC_SERVICE_PORT:-5000}" \
  --metrics-port "${PREDICTIVE_UNIT_METRICS_SERVICE_PORT:-6000}" \
  "$@"
