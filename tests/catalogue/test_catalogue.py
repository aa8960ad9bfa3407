"""The workload catalogue: one declaration per workload, rendered by the supervisor and the program.

Guards: the declarations validate (named metrics ports, probes on declared ports, known
placeholders); a workload cannot land on one side only; both renderers run the SAME argv
(only placeholder positions differ); bad declarations fail naming the field.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.plan.harness import Plan
from workloads.catalogue import catalogue, model_workloads
from workloads.catalogue.declarations import CatalogueOptions
from workloads.catalogue.model import WORKLOAD_LABEL, Dependency, HttpProbe, Metrics, Port, Resource, Workload
from workloads.catalogue.substitution import SubstitutionError, placeholders, substitute
from workloads.local import catalogue as local_catalogue
from workloads.local.errors import ConfigError
from workloads.monitoring.generate import load_catalog



def specs():
    return tuple(sorted(load_catalog(), key=lambda s: s.name))


def test_every_declaration_is_valid_and_names_its_metrics_port():
    declared = catalogue(specs())
    assert {w.component for w in declared.values()} >= {
        "model-server", "stream-worker", "drift-monitor", "quality-service", "rollout-controller", "registry-sync",
        "retrain-trigger", "cost-exporter", "tracking-server"}
    for workload in declared.values():
        if workload.metrics is not None:
            assert workload.metrics.port.endswith("-metrics") or workload.metrics.on_traffic_port, workload.name
            assert workload.metrics.port in {p.name for p in workload.ports}
        for dep in workload.depends_on:
            declared[dep.workload].port(dep.port)  # the edge names a real port


def test_a_metrics_port_must_be_named_metrics():
    with pytest.raises(ValidationError, match=r"metrics.port 'http': name the metrics port '\*-metrics'"):
        Metrics(port="http")


def test_bad_declarations_name_the_field():
    base = dict(name="w", component="thing", description="d", image="drift-monitor", command=("python",))
    with pytest.raises(ValidationError, match="readiness.port 'web' is not one of ports"):
        Workload(**base, ports=(Port(name="http", port=8080),), readiness=HttpProbe(path="/", port="web"))
    with pytest.raises(ValidationError, match=r"\$\{resources.db...\} names no entry of resources_used"):
        Workload(**base, args=("--db", "${resources.db.url}"))
    with pytest.raises(ValidationError, match=r"\$\{workloads.mlflow...\} is not in depends_on"):
        Workload(**base, args=("--tracking", "http://${workloads.mlflow.http}"))
    with pytest.raises(ValidationError, match="a singleton runs one replica"):
        Workload(**base, singleton=True, replicas=2)
    with pytest.raises(SubstitutionError, match=r"unknown placeholder kind \$\{secrets"):
        placeholders("${secrets.x.y}")


class _Resolver:
    def bind(self, workload):
        return "127.0.0.1"

    def own_port(self, workload, port):
        return 1

    def workload_address(self, workload, target, port):
        raise KeyError(f"{target!r} is not here")

    def resource_output(self, workload, name, resource, output):
        raise KeyError(f"{resource.type} has no output {output!r}")


def test_substitution_errors_name_the_workload_and_placeholder():
    workload = Workload(name="w", component="thing", description="d", image="drift-monitor", command=("python",),
                        ports=(Port(name="http-metrics", port=8080),),
                        resources_used={"kafka": Resource(type="kafka")},
                        depends_on=(Dependency(workload="mlflow", port="http"),))
    with pytest.raises(SubstitutionError, match=r"workload w: \$\{ports.grpc\}: .*no port 'grpc'"):
        substitute("${ports.grpc}", workload, _Resolver())
    with pytest.raises(SubstitutionError, match=r"workload w: \$\{resources.kafka.nope\}: kafka has no output 'nope'"):
        substitute("${resources.kafka.nope}", workload, _Resolver())
    assert substitute("--port=${ports.http-metrics} --host ${bind}", workload, _Resolver()) == "--port=1 --host 127.0.0.1"


# ---------------------------------------------------------------- one side only is impossible


def local_services():
    from workloads.local.services import default_registry

    return default_registry()


def test_every_workload_is_a_local_service_or_says_why_not():
    registry = local_services()
    for name, workload in catalogue(specs()).items():
        if local_catalogue.renders(workload):
            assert name in registry, f"{name}: declared but not a local service"
        else:
            assert workload.component in local_catalogue.NOT_RENDERED and name not in registry


def test_a_new_workload_without_a_local_rendering_fails_loudly():
    from workloads.local.services import catalogue_services

    orphan = Workload(name="orphan", component="orphan", description="d", image="drift-monitor",
                      command=("python", "-m", "x"), ports=(Port(name="http-metrics", port=9000),),
                      readiness=HttpProbe(path="/healthz", port="http-metrics"))
    with pytest.raises(ConfigError, match="component 'orphan' has no row in the local port table"):
        local_catalogue.port_keys(orphan, None)
    # and the whole catalogue of the examples renders (no silent gaps)
    assert catalogue_services(specs())


CLUSTER_NOT_RENDERED = {
    # MlflowTracking builds the tracking server (database, artifacts, its Service and PDB).
    "tracking-server": "infra.platform.mlflow.MlflowTracking",
}


def rendered_on_cluster(plan: Plan) -> set[str]:
    """Catalogue entries (label `strata.dev/workload`) of the objects a plan renders."""
    return {r.inputs.get("metadata", {}).get("labels", {}).get(WORKLOAD_LABEL) for r in plan.resources
            if r.custom and isinstance(r.inputs.get("metadata"), dict)} - {None}


def test_every_workload_is_rendered_on_the_cluster_in_some_mode(plans):
    rendered = set().union(*(rendered_on_cluster(plan) for plan in plans.values()))
    for name, workload in catalogue(specs()).items():
        if workload.component in CLUSTER_NOT_RENDERED:
            continue
        assert name in rendered, f"{name}: declared but no stack renders it (rendered: {sorted(rendered)})"


def test_enterprise_scrapes_every_model_server_stream_worker_and_controller(plans):
    """Issue 12 item 1: these had no ServiceMonitor at all."""
    plan = plans["enterprise"]
    monitored = {r.inputs["metadata"]["labels"].get(WORKLOAD_LABEL) for r in plan.of_kind("ServiceMonitor")}
    for spec in plan.spec.models:
        assert f"{spec.name}-stable" in monitored
        if spec.serving.streaming.enabled:
            assert {f"{spec.name}-stream", f"{spec.name}-quality"} <= monitored
    # Some monitors (the platform's) carry no workload label: None is in the set.
    assert any((name or "").endswith("-rollout") for name in monitored) and {"retrain-trigger", "cost-exporter"} <= monitored


# ---------------------------------------------------------------- the same argv on both sides


def _local_argv(name: str, state_dir: Path) -> list[str]:
    from workloads.local.ports import resolve_ports
    from workloads.local.services import LocalOptions, ServiceContext, WorkloadOptions

    # the catalogue's default knobs (the local defaults are a laptop's: a shorter drift window)
    defaults = CatalogueOptions()
    knobs = WorkloadOptions(drift_interval_s=defaults.drift_interval_s, drift_window_rows=defaults.drift_window_rows,
                            drift_min_rows=defaults.drift_min_rows, retrain_cooldown_s=defaults.retrain_cooldown_s)
    spec = local_services()[name]
    ctx = ServiceContext(name=name, state_dir=state_dir, ports=resolve_ports(), options=LocalOptions(workloads=knobs),
                         python="python")
    return spec.command(ctx)


def _cluster_argv(plan: Plan, name: str) -> list[str]:
    [deployment] = [r for r in plan.of_kind("Deployment") if r.inputs["metadata"]["name"] == name]
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    if container["command"][:2] == ["/bin/sh", "-c"]:  # a prelude, then `exec argv`
        import shlex

        return shlex.split(container["args"][0].split(" && exec ", 1)[1])
    return container["command"] + container["args"]


@pytest.mark.parametrize("workload", ["retrain-trigger", "fraud-stream", "fraud-quality", "fraud-drift"])
def test_local_and_cluster_run_the_same_declared_argv(plans, workload, tmp_path):
    """Token for token, except where a placeholder resolves per target."""
    import shutil

    from workloads.catalogue.substitution import KINDS

    declared = catalogue(specs(), CatalogueOptions())[workload]
    template = [*declared.command, *declared.args]
    if workload == "fraud-drift":  # the local side resolves the champion from the registry export
        _register_champion(tmp_path, "fraud")
    local = _local_argv(workload, tmp_path)
    cluster = _cluster_argv(plans["enterprise"], workload)
    assert len(local) == len(cluster) == len(template), (local, cluster)
    for token, here, there in zip(template, local, cluster):
        if not any(f"${{{kind}" in token for kind in KINDS) and token != "python":
            assert here == there == token
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_local_and_cluster_mlflow_run_the_one_declaration(plans, tmp_path):
    """The tracking server's flags, env and probes come from the one `mlflow` declaration on
    both sides; only placeholders differ (and the cluster's own facts: the allowed Host
    names, its metrics, the artifacts bucket's name as env). The AWS bits stay: an `s3://`
    artifact root, `--no-serve-artifacts`, the backend URI from the mlflow-db Secret."""
    from workloads.catalogue.declarations import MLFLOW_DB_SECRET, mlflow
    from workloads.catalogue.substitution import KINDS
    from workloads.local.ports import resolve_ports
    from workloads.local.services import LocalOptions, ServiceContext

    declared = mlflow()
    spec = local_services()["mlflow"]
    ctx = ServiceContext(name="mlflow", state_dir=tmp_path, ports=resolve_ports(), options=LocalOptions(),
                         python="python")
    spec.prepare(ctx)
    local = spec.command(ctx)
    assert local[:3] == ["python", "-m", "mlflow"]  # the checkout's interpreter runs the `mlflow` CLI
    local = ["mlflow", *local[3:]]
    template = [*declared.command, *declared.args]
    for stack in ("enterprise", "quick"):
        [deployment] = [r for r in plans[stack].of_kind("Deployment") if r.inputs["metadata"]["name"] == "mlflow"]
        container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
        cluster = container["command"] + container["args"]
        assert len(local) == len(cluster) == len(template), (local, cluster)
        for token, here, there in zip(template, local, cluster):
            if not any(f"${{{kind}" in token for kind in KINDS):
                assert here == there == token, (token, here, there)
        root = cluster[cluster.index("--default-artifact-root") + 1]
        assert root.startswith("s3://") and cluster[-1] == "--no-serve-artifacts", cluster
        assert local[local.index("--default-artifact-root") + 1].startswith("s3://") and local[-1] == "--no-serve-artifacts"
        env = {e["name"]: e for e in container["env"]}
        assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
            "name": MLFLOW_DB_SECRET.secret, "key": MLFLOW_DB_SECRET.key}
        for var in declared.env:
            assert var.name in env and var.name in spec.env(ctx), var.name
            if var.value is not None:
                assert env[var.name]["value"] == spec.env(ctx)[var.name] == var.value
        probes = {p: container[p]["httpGet"] for p in ("livenessProbe", "readinessProbe")}
        assert probes["readinessProbe"]["path"] == declared.readiness.path and probes["readinessProbe"]["port"] == "http"
        assert container["ports"] == [{"name": "http", "containerPort": declared.port("http").port, "protocol": "TCP"}]
    # locally the Secret's value is the local backend store (what the cluster builds from the database)
    assert spec.env(ctx)["MLFLOW_BACKEND_STORE_URI"].startswith("sqlite:///")


def _register_champion(state_dir: Path, model: str) -> None:
    """A registry export with a champion version (what training writes)."""
    from tests.catalogue.registry_export import write_champion

    write_champion(state_dir / "registry", model)


# ---------------------------------------------------------------- the layers' imports

REPO = Path(__file__).resolve().parents[2]


def _imports(folder: str, exclude: tuple[str, ...] = ()) -> dict[str, set[str]]:
    import ast

    found = {}
    for file in (REPO / folder).rglob("*.py"):
        if str(file.relative_to(REPO)) in exclude:
            continue
        names = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(file.relative_to(REPO))] = names
    return found


def test_cluster_and_local_code_never_import_each_others_adapters():
    # the CLI is the one entry point that offers both (`strata local ...` and `strata plan`)
    for file, names in _imports("infra", exclude=("infra/cli.py",)).items():
        assert not [n for n in names if n.startswith("workloads.local")], file
    # The one shared piece: the operators' CRD documents that the offline plan checks against
    # are the ones the local control plane installs (infra.plan.schemas, no cluster adapter).
    shared = {"workloads/local/cluster.py": {"infra.plan.schemas"}}
    for folder in ("workloads/local", "workloads/catalogue"):
        for file, names in _imports(folder).items():
            allowed = shared.get(str(file), set())
            assert not [n for n in names if (n == "infra" or n.startswith("infra.")) and n not in allowed], file
    for file, names in _imports("workloads/catalogue").items():
        assert not [n for n in names if n.startswith("workloads.local")], file


def test_alertmanager_starts_with_a_fresh_notification_log(tmp_path):
    """Issue 12 item 14: a re-run after `down` pages again for a group the last run notified."""
    from workloads.local.ports import resolve_ports
    from workloads.local.services import LocalOptions, ServiceContext

    spec = local_services()["alertmanager"]
    ctx = ServiceContext(name="alertmanager", state_dir=tmp_path, ports=resolve_ports(), options=LocalOptions())
    ctx.data_dir().mkdir(parents=True)
    (ctx.data_dir() / "nflog").write_bytes(b"last run's notifications")
    (ctx.data_dir() / "silences").write_bytes(b"kept")
    spec.prepare(ctx)
    assert not (ctx.data_dir() / "nflog").exists() and (ctx.data_dir() / "silences").exists()
    config = (ctx.config_dir() / "alertmanager.yml").read_text()
    token_file = tmp_path / "secrets" / "retrain-trigger-token" / "token"
    assert f"credentials_file: {token_file}" in config and token_file.read_text().strip()


def test_the_demo_compares_psi_with_the_threshold():
    """Issue 12 item 10: "(no drift)" only when the PSI is below the spec's threshold."""
    from workloads.local.demo import psi_verdict

    assert psi_verdict(0.05, 0.2) == "(< threshold 0.2: no drift)"
    assert psi_verdict(0.31, 0.2) == "(>= threshold 0.2: DRIFT)"
    assert psi_verdict(float("nan"), 0.2) == "(not evaluated)"
