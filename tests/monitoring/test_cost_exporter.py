"""The cost/spot exporter on Kubernetes objects as the API serves them (`kubectl get -o
json` lists written to a directory and read through the exporter's JsonSource), served
over HTTP by the real exporter process, checked against the price table and the contract."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.plan.prices import instance_hourly
from tests.monitoring.conftest import PYTHON, free_port, wait_http
from workloads.monitoring import metrics as contract
from workloads.monitoring.cost_exporter import CostExporter, JsonSource, component_of, quantity


def node(name: str, pool: str, capacity: str, instance_type: str, cpu: str = "3920m", memory: str = "15896Mi",
         taints: list | None = None, eks: bool = False) -> dict:
    labels = {
        "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": instance_type, "topology.kubernetes.io/region": "eu-west-1",
        "topology.kubernetes.io/zone": "eu-west-1a", "strata.dev/pool": pool,
    }
    if eks:  # a managed node group's node
        labels.update({"eks.amazonaws.com/capacityType": "SPOT" if capacity == "spot" else "ON_DEMAND",
                       "eks.amazonaws.com/nodegroup": pool})
        del labels["strata.dev/pool"]
    else:  # a Karpenter node
        labels.update({"karpenter.sh/capacity-type": capacity, "karpenter.sh/nodepool": pool,
                       "karpenter.sh/initialized": "true", "karpenter.k8s.aws/instance-family": instance_type.split(".")[0]})
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels,
                     "creationTimestamp": "2026-11-27T01:00:00Z"},
        "spec": {"providerID": f"aws:///eu-west-1a/i-{abs(hash(name)) % 10**12:012d}", "taints": taints or []},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "58", "ephemeral-storage": "95551679124"},
                   "capacity": {"cpu": "4", "memory": "16049Mi", "pods": "58"}},
    }


def pod(name: str, node_name: str, model: str, team: str, cpu: str, memory: str, labels: dict | None = None,
        phase: str = "Running") -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": f"team-{team}",
                     "labels": {"strata.dev/model": model, "strata.dev/team": team, **(labels or {})}},
        "spec": {"nodeName": node_name, "containers": [
            {"name": "main", "image": "x", "resources": {"requests": {"cpu": cpu, "memory": memory}}},
            {"name": "sidecar", "image": "y", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
        ]},
        "status": {"phase": phase},
    }


def event(name: str, reason: str, node_name: str, count: int = 1) -> dict:
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{node_name}.{name}", "namespace": "default", "uid": f"ev-{name}"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": f"uid-{node_name}"},
        "reason": reason, "type": "Warning" if reason == "SpotInterrupted" else "Normal",
        "message": "Spot interruption warning was triggered", "count": count,
        "source": {"component": "karpenter"},
    }


def write(directory, nodes, pods=(), events=()) -> None:
    for kind, items in (("nodes", nodes), ("pods", pods), ("events", events)):
        (directory / f"{kind}.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)}))


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_quantities_and_components():
    assert quantity("250m") == 0.25 and quantity("2") == 2 and quantity("1.5") == 1.5
    assert quantity("512Mi") == 512 * 2 ** 20 and quantity("1G") == 1e9 and quantity("1e3") == 1000
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity("12 cores")
    assert component_of({"ray.io/node-type": "worker"}) == "training"
    assert component_of({"seldon-deployment-id": "fraud"}) == "serving"
    assert component_of({"strata.dev/role": "stream-worker"}) == "streaming"
    assert component_of({"app.kubernetes.io/component": "drift-monitor"}) == "other"


def test_exporter_prices_nodes_shares_cost_and_counts_spot_events(tmp_path):
    nodes = [
        node("ip-10-0-1-1", "system", "on-demand", "m6i.large", eks=True),
        node("ip-10-0-2-1", "cpu-spot", "spot", "m6i.xlarge"),
        node("ip-10-0-2-2", "cpu-spot", "spot", "m6a.xlarge"),
        node("ip-10-0-3-1", "gpu", "spot", "g5.xlarge", taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]),
        node("ip-10-0-9-9", "cpu-spot", "spot", "x9.huge"),  # not in the price table: left out, said so
    ]
    pods = [
        pod("fraud-default-0", "ip-10-0-2-1", "fraud", "payments-risk", "900m", "1920Mi", {"seldon-deployment-id": "fraud"}),
        pod("fraud-train-head", "ip-10-0-3-1", "fraud", "payments-risk", "1900m", "7852Mi", {"ray.io/node-type": "head"}),
        pod("fraud-stream-0", "ip-10-0-2-2", "fraud", "payments-risk", "400m", "384Mi", {"strata.dev/role": "stream-worker"}),
        pod("old-job", "ip-10-0-3-1", "fraud", "payments-risk", "3", "8Gi", {"ray.io/node-type": "worker"}, phase="Succeeded"),
    ]
    write(tmp_path, nodes, pods)
    exporter = CostExporter(JsonSource(tmp_path))
    status = exporter.collect()
    text = pc_text(exporter)
    got = samples(text)

    spot = instance_hourly("m6i.xlarge", True)
    assert got[("strata_node_hourly_cost_dollars", (("capacity_type", "spot"), ("instance_type", "m6i.xlarge"),
                                                   ("node", "ip-10-0-2-1"), ("node_pool", "cpu-spot")))] == pytest.approx(spot)
    assert got[("strata_node_hourly_cost_dollars", (("capacity_type", "on-demand"), ("instance_type", "m6i.large"),
                                                   ("node", "ip-10-0-1-1"), ("node_pool", "system")))] == pytest.approx(0.107)
    assert status["unpriced_instance_types"] == ["x9.huge"]
    assert got[("strata_node_pool_nodes", (("capacity_type", "spot"), ("node_pool", "cpu-spot")))] == 3
    assert got[("strata_node_pool_nodes", (("capacity_type", "on-demand"), ("node_pool", "system")))] == 1
    # serving pod: (1.0 cores / 3.92) and (2048Mi / 15896Mi), half each, of the node's price
    serving = (0.5 * 1.0 / 3.92 + 0.5 * 2048 / 15896) * spot
    assert got[("strata_workload_hourly_cost_dollars", (("component", "serving"), ("model", "fraud"),
                                                       ("team", "payments-risk")))] == pytest.approx(serving)
    training = (0.5 * 2.0 / 3.92 + 0.5 * 7980 / 15896) * instance_hourly("g5.xlarge", True)  # the finished job costs nothing
    assert got[("strata_workload_hourly_cost_dollars", (("component", "training"), ("model", "fraud"),
                                                       ("team", "payments-risk")))] == pytest.approx(training)
    assert ("strata_spot_interruptions_total", (("instance_type", "m6i.xlarge"), ("kind", "interruption"),
                                                ("node_pool", "cpu-spot"))) not in got

    # Karpenter's interruption event (seen twice, count 2) and a termination-handler taint;
    # then the interrupted node is gone and the pool gets an on-demand node: a fallback.
    interrupted = [n for n in nodes if n["metadata"]["name"] != "ip-10-0-2-2"]
    interrupted.append(node("ip-10-0-2-3", "cpu-spot", "spot", "m6a.xlarge",
                            taints=[{"key": "aws-node-termination-handler/rebalance-recommendation", "effect": "PreferNoSchedule"}]))
    write(tmp_path, nodes + interrupted[-1:], pods, [event("a", "SpotInterrupted", "ip-10-0-2-2"),
                                                     event("b", "SpotRebalanceRecommendation", "ip-10-0-2-2")])
    exporter.collect()
    write(tmp_path, interrupted + [node("ip-10-0-2-4", "cpu-spot", "on-demand", "m6a.xlarge"),
                                   node("ip-10-0-1-2", "system", "on-demand", "m6i.large", eks=True)],
          pods, [event("a", "SpotInterrupted", "ip-10-0-2-2", count=2)])
    exporter.collect()
    got = samples(pc_text(exporter))
    key = ("strata_spot_interruptions_total", (("instance_type", "m6a.xlarge"), ("kind", "interruption"), ("node_pool", "cpu-spot")))
    assert got[key] == 1
    assert got[("strata_spot_interruptions_total", (("instance_type", "m6a.xlarge"), ("kind", "rebalance"),
                                                    ("node_pool", "cpu-spot")))] == 2  # event on -2-2, taint on -2-3
    assert got[("strata_spot_fallbacks_total", (("node_pool", "cpu-spot"),))] == 1  # not the new system node
    assert ("strata_node_hourly_cost_dollars", (("capacity_type", "spot"), ("instance_type", "m6a.xlarge"),
                                                ("node", "ip-10-0-2-2"), ("node_pool", "cpu-spot"))) not in got  # gone


def pc_text(exporter: CostExporter) -> str:
    import prometheus_client as pc

    return pc.generate_latest(exporter.registry).decode()


def test_the_exporter_process_exports_every_cost_metric_of_the_contract(tmp_path, processes):
    """The real process (`--from-json`), scraped over HTTP like Prometheus does."""
    nodes = [node("n1", "cpu-spot", "spot", "m6i.xlarge", taints=[{"key": "aws-node-termination-handler/spot-itn", "effect": "NoSchedule"}]),
             node("n2", "gpu", "on-demand", "g5.xlarge")]
    write(tmp_path, nodes, [pod("p", "n1", "fraud", "payments-risk", "1", "1Gi", {"seldon-deployment-id": "fraud"})])
    port = free_port()
    process = processes.start("cost", [PYTHON, "-m", "workloads.monitoring.cost_exporter", "--from-json", str(tmp_path),
                                       "--port", str(port), "--interval", "0.2", "--spot-pool", "gpu"])
    wait_http(f"http://127.0.0.1:{port}/healthz", 30, process)
    write(tmp_path, nodes + [node("n3", "gpu", "on-demand", "g5.xlarge")],
          [pod("p", "n1", "fraud", "payments-risk", "1", "1Gi", {"seldon-deployment-id": "fraud"})])

    def exposed() -> set[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return {name for name, _ in samples(response.read().decode())}

    import time

    deadline = time.monotonic() + 20
    names = exposed()
    while "strata_spot_fallbacks_total" not in names and time.monotonic() < deadline:
        time.sleep(0.2)
        names = exposed()
    for m in contract.for_emitter(contract.Emitter.COST):
        assert set(m.series_names) <= names, (m.name, processes.log("cost"))
