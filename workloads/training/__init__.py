"""Training harness: Ray Train/Tune + torch + MLflow tracking and registry.

Light at import time: `workloads.training.artifacts` (the serving bundle loader) must
import without MLflow or Ray; the heavy modules (`runner`, `tracking`, `ray_jobs`)
import them themselves.
"""
