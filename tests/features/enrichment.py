"""Shared by the enrichment tests and benchmark: a fraud spec whose card features come from
the online store, a private redis-server (so a test can kill it: a real outage), and rows
split into what a request carries and what the store holds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from workloads.data.features.online import OnlineMetrics, OnlineStore
from workloads.data.features.repo import build_repo
from workloads.serving.testing import fraud_schema
from workloads.spec import ModelSpec, parse_model_spec

SCHEMA = fraud_schema()
NAMES = SCHEMA.names
STORED = ("avg_amount_30d", "txn_count_24h", "chargebacks_1y")  # from the store; the rest ride on the request
DEFAULTS = {"avg_amount_30d": 50.0, "txn_count_24h": 1.0, "chargebacks_1y": 0.0}


def fraud_spec(view: str, on_outage: str = "reject") -> ModelSpec:
    return parse_model_spec({
        "name": "fraud", "team": "payments-risk", "owner": "risk-ml@example.com",
        "pagerduty": {"routingKeyName": "payments-risk"},
        "training": {"entrypoint": "workloads.examples.fraud.model:hooks", "data": "lake://gold/fraud"},
        "features": {
            "entities": [{"name": "card", "joinKeys": ["card_id"]}],
            "views": [{"name": view, "source": "gold/card_profile", "entities": ["card"], "ttl": "1d",
                       "features": [{"name": n, "dtype": "float64", "default": DEFAULTS[n]} for n in STORED]}],
            "onOutage": on_outage,
        },
    })


def materialize_rows(client: Any, spec: ModelSpec, cards: list[int], rows: np.ndarray) -> None:
    """The stored features of `rows` (one per card) written as materialization writes them."""
    view = spec.features.views[0].name
    store = OnlineStore(client, build_repo([spec]), OnlineMetrics(_throwaway()))
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    frame = pl.DataFrame({"card_id": cards, "event_ts": [now] * len(cards),
                          **{n: rows[:, NAMES.index(n)].astype(np.float64) for n in STORED}})
    assert store.write(view, frame.with_columns(pl.col("event_ts").dt.replace_time_zone("UTC"))) == len(cards)


def request_records(cards: list[Any], rows: np.ndarray) -> list[dict[str, Any]]:
    """What a client sends: the card and the raw fields, not the stored features."""
    return [{"card_id": card, **{n: float(v) for n, v in zip(NAMES, row) if n not in STORED}}
            for card, row in zip(cards, rows)]


def with_defaults(rows: np.ndarray) -> np.ndarray:
    out = rows.copy()
    for name, value in DEFAULTS.items():
        out[:, NAMES.index(name)] = value
    return out


def _throwaway() -> Any:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test alone, in its own process group; its append-only file (fsync
    on every write) brings the data back after a kill -9 and a start on the same directory."""

    def __init__(self, directory: Path, port: int | None = None):
        self.directory, self.port, self.proc = directory, port or free_port(), None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> "PrivateRedis":
        import redis

        from workloads.local.redis import binary

        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                      "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory), "--daemonize", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return self
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.1)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
