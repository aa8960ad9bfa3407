"""Observability for Strata workloads.

- `metrics`: the metrics contract (every metric the platform emits) and the helpers
  that create prometheus-client collectors from it. Import-light: no numpy, so the
  Seldon image (prometheus-client 0.8) can use it too.
- `drift`: reference profiles, PSI and KS (vectorised), prediction drift.
- `quality`: model quality from delayed labels (accuracy, AUC, degradation).
- `drift_service`: the drift/quality exporter process (`/metrics`, `POST /v1/observe`).
- `retrain`: the retraining trigger (Alertmanager webhook receiver).
- `rules`, `dashboards`, `alertmanager`, `generate`: the generated Prometheus rules,
  Grafana dashboards and Alertmanager configuration (one source, deterministic).
"""
