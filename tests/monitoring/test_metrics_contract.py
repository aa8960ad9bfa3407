"""The metrics contract: conventions, and the workloads export exactly what it names."""

from __future__ import annotations

import json
import threading
import urllib.request

import numpy as np
import prometheus_client as pc
from prometheus_client.parser import text_string_to_metric_families

from workloads.monitoring import metrics as contract
from workloads.monitoring.drift import ReferenceProfile
from workloads.monitoring.drift_service import DriftMonitor, make_handler
from workloads.monitoring.retrain import RetrainRequest, RetrainTrigger


def test_every_metric_follows_the_naming_conventions():
    problems = [p for m in contract.CONTRACT for p in contract.convention_problems(m)]
    assert problems == []
    assert len(contract.BY_NAME) == len(contract.CONTRACT)
    for emitter in contract.Emitter:
        assert contract.for_emitter(emitter), f"{emitter} emits nothing"


def test_collectors_expose_the_contract_names_and_labels():
    registry = pc.CollectorRegistry()
    for emitter in contract.Emitter:
        collectors = contract.collectors(emitter, registry)
        for name, collector in collectors.items():
            m = contract.BY_NAME[name]
            child = collector.labels(**{label: "x" for label in m.labels})
            if m.kind is contract.Kind.HISTOGRAM:
                child.observe(0.1)
            elif m.kind is contract.Kind.COUNTER:
                child.inc()
            else:
                child.set(1)
    exposed = {s.name for family in text_string_to_metric_families(pc.generate_latest(registry).decode()) for s in family.samples}
    for m in contract.CONTRACT:
        assert set(m.series_names) <= exposed, m.name


def test_latency_buckets_include_every_slo_target(catalog):
    buckets = contract.latency_buckets(*(s.slos.latency_p99_ms / 1000 for s in catalog))
    for spec in catalog:
        assert spec.slos.latency_p99_ms / 1000 in buckets
    assert contract.le_selector(0.2) == 'le="0.2"'
    assert contract.le_selector(1) == 'le=~"1|1.0"'


def _samples(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_drift_monitor_exports_every_drift_metric_live():
    rng = np.random.default_rng(0)
    profile = ReferenceProfile.build(rng.normal(size=(2000, 2)), ["a", "b"], predictions=rng.uniform(size=2000))
    monitor = DriftMonitor("fraud", "3", "payments-risk", profile, min_rows=10, baseline={"auc": 0.9, "accuracy": 0.9})
    from http.server import ThreadingHTTPServer
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(monitor))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"

    def post(path: str, body: object) -> dict:
        request = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    try:
        rows = rng.normal(size=(100, 2)).tolist()
        rows[0][0] = None  # -> NaN: an invalid row
        ids = [f"r{i}" for i in range(100)]
        assert post("/v1/observe", {"rows": rows, "predictions": rng.uniform(size=100).tolist(), "ids": ids}) == {"accepted": 99, "invalid": 1}
        assert post("/v1/labels", {"ids": ids, "labels": rng.integers(0, 2, size=100).tolist()})["joined"] == 99
        assert post("/v1/evaluate", {})["report"]["rows"] == 99
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            exposed = _samples(response.read().decode())
        for m in contract.for_emitter(contract.Emitter.DRIFT):
            assert set(m.series_names) <= exposed, m.name
        # bad input: 400 with a reason
        for body in ({"rows": [[1, 2, 3]]}, {"rows": "x"}, {"rows": [[1, "a"]]}, {"rows": [[1, 2]], "predictions": [1, 2]}):
            request = urllib.request.Request(base + "/v1/observe", json.dumps(body).encode())
            try:
                urllib.request.urlopen(request, timeout=5)
                raise AssertionError(f"accepted {body}")
            except urllib.error.HTTPError as error:
                assert error.code == 400 and json.loads(error.read())["error"]
    finally:
        server.shutdown()


def test_the_retrain_trigger_exports_every_retrain_metric():
    trigger = RetrainTrigger(lambda r: 1, cooldown_s=0)
    trigger.request(RetrainRequest("fraud", "payments-risk", "x"))
    trigger.join(5)
    exposed = _samples(pc.generate_latest(trigger.registry).decode())
    for m in contract.for_emitter(contract.Emitter.RETRAIN):
        assert set(m.series_names) <= exposed, m.name


def test_the_cost_exporter_exports_every_cost_metric(tmp_path):
    """Real Node/Pod/Event objects (as `kubectl get -o json` writes them) through the exporter."""
    from tests.monitoring.test_cost_exporter import event, node, pod, write
    from workloads.monitoring.cost_exporter import CostExporter, JsonSource

    nodes = [node("a", "cpu-spot", "spot", "m6i.xlarge"), node("b", "system", "on-demand", "m6i.large")]
    pods = [pod("p", "a", "fraud", "payments-risk", "1", "1Gi", {"seldon-deployment-id": "fraud"})]
    write(tmp_path, nodes, pods, [event("e", "SpotInterrupted", "a")])
    exporter = CostExporter(JsonSource(tmp_path))
    exporter.collect()
    write(tmp_path, nodes + [node("c", "cpu-spot", "on-demand", "m6i.xlarge")], pods)  # on-demand in a spot pool: fallback
    exporter.collect()
    exposed = _samples(pc.generate_latest(exporter.registry).decode())
    for m in contract.for_emitter(contract.Emitter.COST):
        assert set(m.series_names) <= exposed, m.name


def test_the_quality_service_exports_every_model_quality_metric():
    from workloads.monitoring.quality import QualityService, ScoredRecord

    service = QualityService("fraud", "payments-risk", baselines={"1": {"accuracy": 0.9, "auc": 0.9}})
    service.on_scored([ScoredRecord(f"k{i}", "1", i / 10, float(i >= 5), True) for i in range(10)], at=100.0)
    assert service.on_labels([(f"k{i}", float(i % 2)) for i in range(10)], at=160.0) == 10
    service.export()
    exposed = _samples(pc.generate_latest(service.registry).decode())
    quality = [m for m in contract.for_emitter(contract.Emitter.DRIFT) if m.name.startswith("strata_model_quality_")]
    assert quality
    for m in quality:
        assert set(m.series_names) <= exposed, m.name
