"""The local Kubernetes control plane (workloads.local.cluster) for the tests that need a
real API server, and the environment a real `pulumi up` runs in (the built CLI and
kubernetes provider, a local file backend, no download from anywhere).

The binaries come from `.ci/cluster-binaries`, which `.ci/setup` runs. Without them these
tests are skipped, naming what is missing, except under `make test`
(STRATA_REQUIRE_MONITORING_BINARIES=1: set-up built every service binary), where a missing
binary is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workloads.local.cluster import LocalCluster, default_bin_dir, operator_crds

REQUIRE_ENV = "STRATA_REQUIRE_MONITORING_BINARIES"  # the Makefile's switch for every service binary
PULUMI_BINARIES = ("pulumi", "pulumi-resource-kubernetes")


def require_binaries(names: list[str]) -> None:
    if not names:
        return
    message = (f"{', '.join(names)} not built in {default_bin_dir()}: run `.ci/cluster-binaries` "
               "(builds them once from the Go module proxy)")
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(message)
    pytest.skip(message)


def new_cluster(path: Path) -> LocalCluster:
    cluster = LocalCluster(path)
    require_binaries(cluster.missing_binaries())
    return cluster


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory):
    """One control plane per session, the operators' CRDs installed; stopped at the end."""
    cluster = new_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.up()
        cluster.install_crds(operator_crds())
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def pulumi_env(tmp_path_factory, local_cluster):
    """os.environ for the Automation API: the built CLI and provider first on PATH, a file
    backend, a passphrase, no update check and no plugin download."""
    bin_dir = default_bin_dir()
    require_binaries([name for name in PULUMI_BINARIES if not os.access(bin_dir / name, os.X_OK)])
    root = tmp_path_factory.mktemp("pulumi")
    (root / "state").mkdir()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PULUMI_HOME": str(root / "home"),
        "PULUMI_BACKEND_URL": f"file://{root / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "local-cluster-tests",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def cluster_prometheus(tmp_path_factory):
    """What runs beside the cluster for a rollout's analysis: a Prometheus scraping every
    second (file-SD targets under `<state_dir>/config/prometheus/targets`), this module's
    own, stopped at its end."""
    from tests.local_services import RunningServices, free_port_map
    from workloads.local.observability import write_prometheus_config
    from workloads.local.services import LocalOptions
    from workloads.local.supervisor import Supervisor

    state_dir = tmp_path_factory.mktemp("cluster-services")
    ports = free_port_map()
    targets = state_dir / "config" / "prometheus" / "targets"
    config = write_prometheus_config(state_dir / "prometheus.yml", prometheus_port=ports["prometheus"],
                                     alertmanager_port=None, targets_dir=targets, scrape_interval="1s")
    supervisor = Supervisor(state_dir, ports=ports, options=LocalOptions(prometheus_config=config))
    try:
        yield RunningServices(supervisor)("prometheus")
    finally:
        supervisor.down()
