"""Serving fixtures: a real registry export (torch.export model + schema + profile) and a real
Seldon model server started from the serving environment (.venv-serving)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from workloads.serving.launch import ModelServer, ServerConfig, serving_python

SETUP_HINT = "create it with: workloads/serving/setup-env.sh  (Python 3.12 + seldon-core 1.19.0 + torch, a few minutes once)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory) -> Path:
    """`STRATA_TEST_REGISTRY_DIR` (e.g. a real training export) or a freshly scripted model."""
    given = os.environ.get("STRATA_TEST_REGISTRY_DIR")
    if given:
        return Path(given)
    from workloads.serving.testing import make_registry

    return make_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def serving_env() -> Path:
    python = serving_python()
    if not python.exists():
        pytest.fail(f"serving environment missing ({python}); {SETUP_HINT}")
    return python


def start_server(registry_root: Path, log_dir: Path, alias: str = "champion", **overrides) -> ModelServer:
    http, grpc, metrics = free_ports(3)
    config = ServerConfig(
        model="fraud", alias=alias, registry_dir=str(registry_root), http_port=http, grpc_port=grpc,
        metrics_port=metrics, team="payments-risk", max_batch_rows=overrides.pop("max_batch_rows", 256),
        max_payload_bytes=overrides.pop("max_payload_bytes", 256 * 1024), **overrides,
    )
    return ModelServer(config, log_path=log_dir / f"server-{alias}-{http}.log").start(timeout=180)


@pytest.fixture(scope="session")
def server(serving_env, registry_root, tmp_path_factory):
    srv = start_server(registry_root, tmp_path_factory.mktemp("serving-logs"))
    yield srv
    srv.stop()
