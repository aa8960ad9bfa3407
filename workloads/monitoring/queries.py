"""PromQL expression builders shared by the dashboards and the rollout controller.

The per-model dashboard's "Rollout" panels and the controller's analysis run the SAME
expressions: a builder takes the model (a name, or ``$model`` in a dashboard), the range
window (``30s``, or ``$__rate_interval``) and groups by ``predictor``, so one query answers
for both arms of a rollout (``stable`` and ``candidate``; ``shadow`` when mirrored).
Pure string building, no I/O: unit-tested against promtool's parser.
"""

from __future__ import annotations

import re

from workloads.monitoring.metrics import metric

REQUESTS = metric("serving_requests_total").name
DURATION = metric("serving_request_duration_seconds").name
SCORES = metric("serving_prediction_score").name
LOADED_VERSION = metric("serving_loaded_version_info").name
ROLLOUT_ACTIVE = metric("rollout_active").name
ROLLOUT_WEIGHT = metric("rollout_candidate_weight_ratio").name
ROLLOUT_DECISIONS = metric("rollout_decisions_total").name
ROLLOUT_TRANSITION = metric("rollout_last_transition_timestamp_seconds").name
ROLLOUT_ROLLBACK_SECONDS = metric("rollout_rollback_duration_seconds").name

ERROR_CODES = 'code=~"5.."'
_WINDOW = re.compile(r"^([1-9][0-9]*(ms|s|m|h|d)|\$__rate_interval|\$__range|\$__interval)$")
_VALUE = re.compile(r'^[^"\\\n]*$')


def _window(window: str) -> str:
    if not _WINDOW.match(window):
        raise ValueError(f"range window {window!r} must be a Prometheus duration like 30s or 5m")
    return window


def selector(model: str, *matchers: str) -> str:
    """``model="<model>"`` plus extra matchers; ``$model`` stays a dashboard variable."""
    if not model or not _VALUE.match(model):
        raise ValueError(f"model {model!r} is not a usable label value")
    return ",".join((f'model="{model}"', *matchers))


def _by(group: tuple[str, ...]) -> str:
    return f"sum by ({', '.join(group)})" if group else "sum"


def request_rate(model: str, window: str, by: tuple[str, ...] = ("predictor",)) -> str:
    """Requests per second (all codes) per predictor."""
    return f"{_by(by)} (rate({REQUESTS}{{{selector(model)}}}[{_window(window)}]))"


def processes_by_loaded_version(model: str, predictor: str) -> str:
    """Server processes that report serving each `version` of one predictor now."""
    matchers = selector(model, f'predictor="{predictor}"')
    return f"count by (version) ({LOADED_VERSION}{{{matchers}}} == 1)"


def requests_in_window(model: str, window: str, by: tuple[str, ...] = ("predictor",)) -> str:
    """Requests answered in the window (the sample size of each arm)."""
    return f"{_by(by)} (increase({REQUESTS}{{{selector(model)}}}[{_window(window)}]))"


def errors_in_window(model: str, window: str, by: tuple[str, ...] = ("predictor",)) -> str:
    """5xx answers in the window."""
    return f"{_by(by)} (increase({REQUESTS}{{{selector(model, ERROR_CODES)}}}[{_window(window)}]))"


def error_ratio(model: str, window: str, by: tuple[str, ...] = ("predictor",)) -> str:
    """5xx share of requests per predictor."""
    w = _window(window)
    return (f"{_by(by)} (rate({REQUESTS}{{{selector(model, ERROR_CODES)}}}[{w}]))\n/\n"
            f"{_by(by)} (rate({REQUESTS}{{{selector(model)}}}[{w}]))")


def latency_quantile(model: str, window: str, quantile: float = 0.99, by: tuple[str, ...] = ("predictor",)) -> str:
    """Request latency quantile (seconds) per predictor, from the latency histogram."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    group = tuple(by) + ("le",)
    return (f"histogram_quantile({quantile:g}, {_by(group)} "
            f"(rate({DURATION}_bucket{{{selector(model)}}}[{_window(window)}])))")


def score_buckets(model: str, window: str, by: tuple[str, ...] = ("predictor",)) -> str:
    """Served-score histogram (cumulative counts per ``le``) per predictor over the window:
    the prediction distribution the controller compares between arms."""
    group = tuple(by) + ("le",)
    return f"{_by(group)} (increase({SCORES}_bucket{{{selector(model)}}}[{_window(window)}]))"


def rollout_weight(model: str) -> str:
    return f"max by (strategy) ({ROLLOUT_WEIGHT}{{{selector(model)}}})"


def rollout_active(model: str) -> str:
    return f"max by (strategy, candidate_version) ({ROLLOUT_ACTIVE}{{{selector(model)}}})"


def rollout_decisions(model: str, window: str) -> str:
    return f"sum by (outcome) (increase({ROLLOUT_DECISIONS}{{{selector(model)}}}[{_window(window)}]))"


def rollout_seconds_since_transition(model: str) -> str:
    return f"time() - max by (strategy) ({ROLLOUT_TRANSITION}{{{selector(model)}}})"


def rollout_rollback_seconds(model: str) -> str:
    """Seconds the last automatic rollback took from decision to 100% stable."""
    return f"max by (strategy) ({ROLLOUT_ROLLBACK_SECONDS}{{{selector(model)}}})"
