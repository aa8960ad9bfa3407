"""The cost and spot exporter: node prices, per-model cost shares, spot interruptions.

    python -m workloads.monitoring.cost_exporter --port 9111 [--interval 60] [--spot-pool gpu-spot]
    python -m workloads.monitoring.cost_exporter --from-json DIR   # nodes.json, pods.json, events.json

What it reads, through a `NodeSource` (the Kubernetes API in the cluster; `kubectl get
-o json` lists from a directory otherwise):

* Nodes: `node.kubernetes.io/instance-type`, `karpenter.sh/capacity-type` (or EKS's
  `eks.amazonaws.com/capacityType`), the pool (`karpenter.sh/nodepool`, `strata.dev/pool`,
  `eks.amazonaws.com/nodegroup`), `topology.kubernetes.io/zone`, allocatable CPU/memory,
  taints. The hourly price comes from the plan's price table (`infra/plan/prices.py`,
  on-demand list price; spot = the table's long-run spot fraction), so the live figure and
  the offline plan estimate use one table.
* Pods labelled `strata.dev/model`: their CPU/memory requests share their node's cost
  (half by CPU share, half by memory share of the node's allocatable), summed per model,
  team and component (training | serving | streaming | other).
* Karpenter's interruption events on nodes (`SpotInterrupted`, `SpotRebalanceRecommendation`)
  and the node-termination-handler taints (`aws-node-termination-handler/spot-itn`,
  `.../rebalance-recommendation`): each (node, kind) is counted once, whichever shows it.

A spot fallback is an on-demand node that appears in a pool that runs spot (it had spot
nodes, or is named with `--spot-pool`): the pool could not get spot capacity. Nodes present
at the first collection are the baseline, not fallbacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

import prometheus_client as pc

from workloads.monitoring import metrics as contract
from workloads.monitoring.http import JsonHandler, serve_collecting

log = logging.getLogger("strata.cost")

INSTANCE_TYPE = "node.kubernetes.io/instance-type"
CAPACITY_TYPE = "karpenter.sh/capacity-type"
EKS_CAPACITY_TYPE = "eks.amazonaws.com/capacityType"  # managed node groups: SPOT | ON_DEMAND
ZONE = "topology.kubernetes.io/zone"
POOL_LABELS = ("karpenter.sh/nodepool", "strata.dev/pool", "eks.amazonaws.com/nodegroup")
MODEL, TEAM, ROLE, COMPONENT = "strata.dev/model", "strata.dev/team", "strata.dev/role", "app.kubernetes.io/component"
INTERRUPTION_EVENTS = {"SpotInterrupted": "interruption", "SpotRebalanceRecommendation": "rebalance"}
INTERRUPTION_TAINTS = {"aws-node-termination-handler/spot-itn": "interruption",
                       "aws-node-termination-handler/rebalance-recommendation": "rebalance"}
COMPONENTS = ("training", "serving", "streaming")
SEEN_LIMIT = 100_000  # (node, kind) pairs remembered for de-duplication


class NodeSource(Protocol):
    """Kubernetes objects as the API serves them in JSON (camelCase keys)."""

    def nodes(self) -> list[dict]: ...

    def pods(self) -> list[dict]: ...

    def events(self) -> list[dict]: ...


def _items(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a Kubernetes List (`items`) or a JSON array")
    return items


class JsonSource:
    """`kubectl get nodes|pods|events -A -o json` saved as nodes.json, pods.json, events.json
    in one directory (re-read on every collection; missing files are empty lists)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ValueError(f"--from-json {directory}: not a directory")

    def nodes(self) -> list[dict]:
        return _items(self.directory / "nodes.json")

    def pods(self) -> list[dict]:
        return _items(self.directory / "pods.json")

    def events(self) -> list[dict]:
        return _items(self.directory / "events.json")


class KubernetesSource:
    """The cluster's API (in-cluster service account, else the kubeconfig). Needs RBAC
    list on nodes, pods and events, cluster-wide."""

    def __init__(self, kubeconfig: str | None = None) -> None:
        from kubernetes import client, config

        if kubeconfig is not None:
            self._api = config.new_client_from_config(config_file=kubeconfig)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._api = client.ApiClient()
        self._core = client.CoreV1Api(self._api)

    def _plain(self, items: Iterable[Any]) -> list[dict]:
        return [self._api.sanitize_for_serialization(item) for item in items]

    def nodes(self) -> list[dict]:
        return self._plain(self._core.list_node().items)

    def pods(self) -> list[dict]:
        return self._plain(self._core.list_pod_for_all_namespaces(label_selector=MODEL).items)

    def events(self) -> list[dict]:
        return self._plain(self._core.list_event_for_all_namespaces(field_selector="involvedObject.kind=Node").items)


# ---------------------------------------------------------------- quantities

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30, "Ti": 2.0 ** 40, "Pi": 2.0 ** 50, "Ei": 2.0 ** 60}


def quantity(text: Any) -> float:
    """A Kubernetes resource quantity (`250m`, `1.5`, `512Mi`, `1e3`) as a number."""
    match = _QUANTITY.match(str(text).strip())
    if match is None or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


# ---------------------------------------------------------------- the model of a node


@dataclass(frozen=True)
class NodeInfo:
    name: str
    pool: str
    capacity_type: str  # spot | on-demand
    instance_type: str
    zone: str
    cpu: float  # allocatable cores
    memory: float  # allocatable bytes
    interruption_taints: tuple[str, ...]  # kinds


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def node_info(node: Mapping[str, Any]) -> NodeInfo:
    labels = _labels(node)
    name = str((node.get("metadata") or {}).get("name", ""))
    capacity = labels.get(CAPACITY_TYPE)
    if capacity is None and EKS_CAPACITY_TYPE in labels:
        capacity = "spot" if labels[EKS_CAPACITY_TYPE].upper() == "SPOT" else "on-demand"
    pool = next((labels[key] for key in POOL_LABELS if labels.get(key)), "unknown")
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    taints = (node.get("spec") or {}).get("taints") or []
    kinds = tuple(sorted({INTERRUPTION_TAINTS[t["key"]] for t in taints if t.get("key") in INTERRUPTION_TAINTS}))
    return NodeInfo(name, pool, capacity or "on-demand", labels.get(INSTANCE_TYPE, "unknown"), labels.get(ZONE, ""),
                    quantity(allocatable.get("cpu", 0)), quantity(allocatable.get("memory", 0)), kinds)


def component_of(pod_labels: Mapping[str, str]) -> str:
    declared = pod_labels.get(COMPONENT, "")
    if declared in COMPONENTS:
        return declared
    role = pod_labels.get(ROLE, "") + " " + declared
    if any(key.startswith("ray.io/") for key in pod_labels) or "train" in role:
        return "training"
    if "seldon-deployment-id" in pod_labels or "serv" in role or "predictor" in role:
        return "serving"
    if "stream" in role:
        return "streaming"
    return "other"


def pod_requests(pod: Mapping[str, Any]) -> tuple[float, float]:
    """(cores, bytes) the pod requests: its containers summed, or its largest init container."""
    spec = pod.get("spec") or {}

    def total(containers: list) -> tuple[float, float]:
        cpu = memory = 0.0
        for container in containers or []:
            requests = (container.get("resources") or {}).get("requests") or {}
            cpu += quantity(requests.get("cpu", 0))
            memory += quantity(requests.get("memory", 0))
        return cpu, memory

    cpu, memory = total(spec.get("containers"))
    for init in spec.get("initContainers") or []:
        init_cpu, init_memory = total([init])
        cpu, memory = max(cpu, init_cpu), max(memory, init_memory)
    return cpu, memory


def default_price(instance_type: str, spot: bool) -> float:
    from infra.plan.prices import instance_hourly

    return instance_hourly(instance_type, spot)


class CostExporter:
    """One collection = read the source, set the gauges, count new interruptions/fallbacks."""

    def __init__(self, source: NodeSource, registry: Any = None,
                 price: Callable[[str, bool], float] = default_price, spot_pools: Iterable[str] = ()):
        self.source = source
        self.price = price
        self.registry = registry if registry is not None else pc.CollectorRegistry()
        self.m = contract.collectors(contract.Emitter.COST, self.registry)
        self.spot_pools = set(spot_pools)
        self._known_nodes: set[str] | None = None  # None until the first collection (the baseline)
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        self.unpriced: set[str] = set()
        self.last: dict[str, Any] = {}

    def _interrupted(self, node: str, kind: str, pool: str, instance_type: str) -> None:
        if (node, kind) in self._seen:
            return
        self._seen[(node, kind)] = None
        while len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        self.m["strata_spot_interruptions_total"].labels(node_pool=pool, instance_type=instance_type, kind=kind).inc()

    def collect(self) -> dict[str, Any]:
        nodes = [node_info(n) for n in self.source.nodes()]
        pods = self.source.pods()
        events = self.source.events()
        with self._lock:
            return self._collect(nodes, pods, events)

    def _collect(self, nodes: list[NodeInfo], pods: list[dict], events: list[dict]) -> dict[str, Any]:
        node_cost, pool_nodes = self.m["strata_node_hourly_cost_dollars"], self.m["strata_node_pool_nodes"]
        node_cost.clear()
        pool_nodes.clear()
        by_name: dict[str, NodeInfo] = {n.name: n for n in nodes}
        hourly: dict[str, float] = {}
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for node in nodes:
            counts[(node.pool, node.capacity_type)] += 1
            if node.capacity_type == "spot":
                self.spot_pools.add(node.pool)
            try:
                hourly[node.name] = self.price(node.instance_type, node.capacity_type == "spot")
            except KeyError as error:
                if node.instance_type not in self.unpriced:
                    log.warning("node %s: %s; left out of the cost metrics", node.name, error)
                self.unpriced.add(node.instance_type)
                continue
            node_cost.labels(node=node.name, node_pool=node.pool, capacity_type=node.capacity_type,
                             instance_type=node.instance_type).set(hourly[node.name])
        for (pool, capacity), count in counts.items():
            pool_nodes.labels(node_pool=pool, capacity_type=capacity).set(count)

        # fallbacks: new on-demand nodes in pools that run spot
        names = set(by_name)
        if self._known_nodes is not None:
            for name in sorted(names - self._known_nodes):
                node = by_name[name]
                if node.capacity_type == "on-demand" and node.pool in self.spot_pools:
                    self.m["strata_spot_fallbacks_total"].labels(node_pool=node.pool).inc()
        self._known_nodes = names

        # interruptions: Karpenter events on nodes, and termination-handler taints
        for node in nodes:
            for kind in node.interruption_taints:
                self._interrupted(node.name, kind, node.pool, node.instance_type)
        for event in events:
            kind = INTERRUPTION_EVENTS.get(str(event.get("reason", "")))
            involved = event.get("involvedObject") or {}
            if kind is None or involved.get("kind") != "Node":
                continue
            node = by_name.get(str(involved.get("name", "")))
            self._interrupted(str(involved.get("name", "")), kind,
                              node.pool if node else "unknown", node.instance_type if node else "unknown")

        # per-model share of node cost, by requests
        shares: dict[tuple[str, str, str], float] = defaultdict(float)
        for pod in pods:
            labels = _labels(pod)
            spec, status = pod.get("spec") or {}, pod.get("status") or {}
            node = by_name.get(str(spec.get("nodeName", "")))
            if not labels.get(MODEL) or node is None or node.name not in hourly:
                continue
            if status.get("phase") in ("Succeeded", "Failed"):
                continue
            cpu, memory = pod_requests(pod)
            cpu_share = cpu / node.cpu if node.cpu else 0.0
            memory_share = memory / node.memory if node.memory else 0.0
            share = min(1.0, 0.5 * cpu_share + 0.5 * memory_share)
            shares[(labels[MODEL], labels.get(TEAM, "unknown"), component_of(labels))] += share * hourly[node.name]
        workload = self.m["strata_workload_hourly_cost_dollars"]
        workload.clear()
        for (model, team, component), dollars in shares.items():
            workload.labels(model=model, team=team, component=component).set(dollars)
        self.last = {
            "nodes": len(nodes), "hourly_dollars": round(sum(hourly.values()), 6),
            "pools": {f"{pool}/{capacity}": count for (pool, capacity), count in sorted(counts.items())},
            "workloads": {f"{m}/{c}": round(d, 6) for (m, _, c), d in sorted(shares.items())},
            "unpriced_instance_types": sorted(self.unpriced),
        }
        return self.last


def make_handler(exporter: CostExporter) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/metrics":
                self._send(200, pc.generate_latest(exporter.registry), pc.CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._send(200, json.dumps({"status": "ok", **exporter.last}).encode())
            else:
                self._send(404, json.dumps({"error": f"no route {self.path}"}).encode())

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Strata cost and spot exporter")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9111)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between collections")
    parser.add_argument("--from-json", help="a directory of nodes.json, pods.json, events.json instead of the API")
    parser.add_argument("--spot-pool", action="append", default=[],
                        help="pools that run spot first (an on-demand node there is a fallback); repeatable")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be > 0")
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(levelname)s %(message)s")
    source: NodeSource = JsonSource(args.from_json) if args.from_json else KubernetesSource()
    exporter = CostExporter(source, spot_pools=args.spot_pool)
    exporter.collect()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(exporter))
    server.daemon_threads = True
    serve_collecting(server, exporter.collect, args.interval, "cost exporter", log, collect_first=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
