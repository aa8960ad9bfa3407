"""Online enrichment in the real Seldon server and the real stream worker, against real Redis:
a request names its card and carries only its raw fields; the stored features come from the
online store and the answer equals the artifact's on the full row. An unknown card gets the
declared defaults, a missing key is a 400 naming it, and a killed Redis gives what the spec
says: 503 with the reason (reject), the defaults (defaults), or, in the stream worker, a
rewound batch that is scored once Redis is back (nothing lost, nothing dead-lettered)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry

from tests.features.enrichment import (NAMES, SCHEMA, PrivateRedis, fraud_spec, materialize_rows, request_records,
                                       with_defaults)
from tests.serving.conftest import start_server
from workloads.data.features.lookup import EnrichmentPlan
from workloads.data.features.repo import enrichment_plan
from workloads.serving.launch import serving_python
from workloads.serving.testing import make_registry, reference_outputs, sample_rows

PREDICT = "/api/v1.0/predictions"


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory):
    return make_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def serving_env():
    python = serving_python()
    if not python.exists():
        pytest.fail(f"serving environment missing ({python}); run workloads/serving/setup-env.sh")
    return python


def predict(server, records):
    return requests.post(server.url + PREDICT, json={"jsonData": {"instances": records}}, timeout=30)


def scores(resp) -> np.ndarray:
    assert resp.status_code == 200, resp.text[:500]
    return np.asarray(resp.json()["data"]["ndarray"], dtype=np.float32)  # REST jsonData answers as ndarray


def metric_total(server, name: str, **labels) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_plan_is_the_specs_online_views_and_round_trips():
    spec = fraud_spec("card_profile", on_outage="defaults")
    plan = enrichment_plan(spec)
    assert plan.key_fields == ["card_id"] and plan.on_outage == "defaults" and plan.model == "fraud"
    assert plan.feature_names == ["avg_amount_30d", "txn_count_24h", "chargebacks_1y"]
    assert EnrichmentPlan.from_json(plan.to_json()) == plan
    with pytest.raises(ValueError, match="feature plan is not valid"):
        EnrichmentPlan.from_json('{"views": [{"name": "x"}]}')
    with pytest.raises(ValueError, match="onOutage must be defaults or reject"):
        EnrichmentPlan.from_json(plan.to_json().replace('"defaults"', '"ignore"'))


def test_server_enriches_from_redis_and_refuses_with_503_when_it_dies(serving_env, registry_root, tmp_path):
    view = f"card_profile_{uuid.uuid4().hex[:8]}"
    spec = fraud_spec(view, on_outage="reject")
    store = PrivateRedis(tmp_path / "redis").start()
    server = None
    try:
        rows = sample_rows(SCHEMA, 12, seed=31)
        cards = list(range(1000, 1012))
        materialize_rows(store.client(), spec, cards, rows)
        server = start_server(registry_root, tmp_path, workers=1, features=enrichment_plan(spec).to_json(),
                              feature_store_url=store.url)
        expected = reference_outputs(registry_root, "fraud", "champion", rows)
        np.testing.assert_allclose(scores(predict(server, request_records(cards, rows))), expected,
                                   rtol=1e-5, atol=1e-7)

        # an unknown card: the declared defaults, counted
        unknown = sample_rows(SCHEMA, 2, seed=32)
        np.testing.assert_allclose(scores(predict(server, request_records([-7, "nobody"], unknown))),
                                   reference_outputs(registry_root, "fraud", "champion", with_defaults(unknown)),
                                   rtol=1e-5, atol=1e-7)
        assert metric_total(server, "strata_feature_lookups_total", model="fraud", view=view, outcome="default") == 2
        assert metric_total(server, "strata_feature_lookups_total", model="fraud", view=view, outcome="hit") == 12

        # no key: a 400 naming it; a record that brings a stored feature keeps its own value
        records = request_records(cards[:1], rows[:1])
        del records[0]["card_id"]
        missing = predict(server, records)
        assert missing.status_code == 400 and missing.json()["status"]["reason"] == "missing_field", missing.text
        assert "card_id" in missing.json()["status"]["info"]
        own = request_records(cards[:1], rows[:1])
        own[0]["chargebacks_1y"] = 7.0
        row = rows[:1].copy()
        row[0, NAMES.index("chargebacks_1y")] = 7.0
        np.testing.assert_allclose(scores(predict(server, own)),
                                   reference_outputs(registry_root, "fraud", "champion", row), rtol=1e-5, atol=1e-7)

        # gRPC jsonData is enriched the same way (protobuf Struct sends the card as 1000.0)
        from tests.serving.test_server import grpc_send

        [answer] = grpc_send(serving_env, server, [{"jsonData": {"instances": request_records(cards[:3], rows[:3])}}])
        assert answer["grpc_code"] == "OK", answer
        values = answer["response"]["data"]["tensor"]["values"]
        np.testing.assert_allclose(np.asarray(values, dtype=np.float32).reshape(-1, 2), expected[:3],
                                   rtol=1e-5, atol=1e-7)

        # Redis dies: 503 with the reason, never a 5xx crash; the server keeps answering health
        store.kill()
        down = predict(server, request_records(cards[:2], rows[:2]))
        assert down.status_code == 503, down.text
        status = down.json()["status"]
        assert status["reason"] == "feature_store_unavailable" and "online feature store unavailable" in status["info"]
        assert metric_total(server, "strata_feature_store_errors_total", view=view) >= 1
        assert requests.get(server.url + "/health/ping", timeout=10).status_code == 200

        # back on the same port with its append-only file: served again, from the store
        store.start()
        np.testing.assert_allclose(scores(predict(server, request_records(cards[:2], rows[:2]))), expected[:2],
                                   rtol=1e-5, atol=1e-7)
    finally:
        if server is not None:
            server.stop()
        store.kill()


def test_server_serves_defaults_on_outage_when_the_spec_says_so(serving_env, registry_root, tmp_path):
    spec = fraud_spec(f"card_profile_{uuid.uuid4().hex[:8]}", on_outage="defaults")
    dead = PrivateRedis(tmp_path / "never")  # never started: connection refused
    server = start_server(registry_root, tmp_path, workers=1, features=enrichment_plan(spec).to_json(),
                          feature_store_url=dead.url)
    try:
        rows = sample_rows(SCHEMA, 4, seed=33)
        np.testing.assert_allclose(scores(predict(server, request_records([1, 2, 3, 4], rows))),
                                   reference_outputs(registry_root, "fraud", "champion", with_defaults(rows)),
                                   rtol=1e-5, atol=1e-7)
        assert metric_total(server, "strata_feature_store_errors_total", view=spec.features.views[0].name) == 1
    finally:
        server.stop()


def test_a_plan_without_a_store_url_fails_the_start():
    from workloads.serving.server import _enrichment_plan

    with pytest.raises(ValueError, match="feature_store_url is empty"):
        _enrichment_plan(enrichment_plan(fraud_spec("v")).to_json(), "")


# ---------------------------------------------------------------- the stream worker


@pytest.fixture(scope="module")
def kafka(local_services) -> str:
    return local_services("kafka").kafka_bootstrap


def test_stream_worker_enriches_and_rewinds_a_batch_while_redis_is_down(kafka, registry_root, tmp_path):
    import threading

    from kafka import KafkaProducer

    from tests.streaming.conftest import create_topics, read_topic
    from workloads.streaming.worker import DLQ_REASON, StreamWorker, WorkerConfig

    view = f"card_profile_{uuid.uuid4().hex[:8]}"
    spec = fraud_spec(view, on_outage="reject")
    store = PrivateRedis(tmp_path / "redis").start()
    rows = sample_rows(SCHEMA, 30, seed=34)
    cards = list(range(2000, 2030))
    materialize_rows(store.client(), spec, cards, rows)
    topics = create_topics(kafka, partitions=2, prefix="enrich")
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    for card, record in zip(cards[:20], request_records(cards[:20], rows[:20])):
        producer.send(topics.input, key=f"card-{card}".encode(), value=json.dumps(record).encode())
    keyless = {k: v for k, v in request_records([0], rows[:1])[0].items() if k != "card_id"}
    producer.send(topics.input, key=b"no-key", value=json.dumps(keyless).encode())
    producer.flush()
    prom = CollectorRegistry()
    worker = StreamWorker(WorkerConfig(bootstrap=kafka, model="fraud", registry_dir=str(registry_root), topics=topics,
                                       group_id=f"g-{topics.input}", batch_size=8, session_timeout_ms=6000,
                                       features=enrichment_plan(spec).to_json(), feature_store_url=store.url),
                          metrics_registry=prom)
    runner = threading.Thread(target=lambda: worker.start().run(idle_exit_s=20), daemon=True)
    try:
        runner.start()
        out = read_topic(kafka, topics.output, until=lambda rs: len(rs) >= 20, timeout=120)
        dead = read_topic(kafka, topics.dead_letter, until=lambda rs: len(rs) >= 1, timeout=60)
        assert [r.key for r in dead] == [b"no-key"] and dict(dead[0].headers)[DLQ_REASON] == b"missing_field"

        # Redis dies with 10 records still to come: they wait (rewound), then are scored
        store.kill()
        for card, record in zip(cards[20:], request_records(cards[20:], rows[20:])):
            producer.send(topics.input, key=f"card-{card}".encode(), value=json.dumps(record).encode())
        producer.flush()
        read_topic(kafka, topics.output, until=lambda rs: False, timeout=3)  # the worker meets the outage
        errors = prom.get_sample_value("strata_feature_store_errors_total", {"model": "fraud", "view": view}) or 0
        assert errors >= 1
        store.start()  # its append-only file brings the features back
        out = read_topic(kafka, topics.output, until=lambda rs: len(rs) >= 30, timeout=120)
    finally:
        producer.close()
        worker.stopper.stop = True
        runner.join(timeout=60)
        store.kill()
    scored = {r.key.decode(): json.loads(r.value) for r in out}
    assert set(scored) == {f"card-{c}" for c in cards}, sorted(scored)
    got = np.array([[scored[f"card-{c}"]["scores"]["proba_0"], scored[f"card-{c}"]["scores"]["proba_1"]]
                    for c in cards])
    np.testing.assert_allclose(got, reference_outputs(registry_root, "fraud", "champion", rows), rtol=1e-5, atol=1e-7)
    assert "card_id" not in scored["card-2000"]["features"]
    assert scored["card-2000"]["features"]["chargebacks_1y"] == float(rows[0][NAMES.index("chargebacks_1y")])
    dead = read_topic(kafka, topics.dead_letter, until=lambda rs: len(rs) >= 1, timeout=10)
    assert len(dead) == 1  # the outage dead-lettered nothing


# ---------------------------------------------------------------- the one declaration


def test_the_catalogue_declares_the_feature_store_for_a_model_with_online_features(tmp_path):
    from workloads.catalogue.declarations import model_server, stream_worker
    from workloads.local.catalogue import local_dependencies
    from workloads.local.ports import resolve_ports
    from workloads.local.services import LOCAL_PROVISIONERS, LocalOptions, ServiceContext
    from workloads.spec import parse_model_spec

    spec = fraud_spec("card_profile")
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["serving"]["streaming"] = {"enabled": True}
    spec = parse_model_spec(doc)
    worker = stream_worker(spec)
    args = list(worker.args)
    assert EnrichmentPlan.from_json(args[args.index("--features") + 1]) == enrichment_plan(spec)
    assert args[args.index("--feature-store-url") + 1] == "${resources.features.url}"
    for workload in (worker, model_server(spec, "stable")):
        assert workload.resources_used["features"].type == "feature-store"
        assert "redis" in local_dependencies(workload, [])  # started after the local Redis
    ctx = ServiceContext(name="fraud-stream", state_dir=tmp_path, ports=resolve_ports(), options=LocalOptions(),
                         python="python")
    url = LOCAL_PROVISIONERS["feature-store"](ctx, worker, worker.resources_used["features"], "url")
    assert url == f"redis://127.0.0.1:{ctx.port('redis')}/0"
    # without a features section nothing changes
    plain = parse_model_spec({k: v for k, v in doc.items() if k != "features"})
    assert "--features" not in stream_worker(plain).args and "features" not in stream_worker(plain).resources_used


def test_enricher_looks_up_only_what_a_record_lacks(redis_client, redis_url):
    from workloads.serving.contract import InputError
    from workloads.serving.enrichment import Enricher

    spec = fraud_spec(f"card_profile_{uuid.uuid4().hex[:8]}")
    rows = sample_rows(SCHEMA, 2, seed=35)
    materialize_rows(redis_client, spec, [5, 6], rows)
    prom = CollectorRegistry()
    enricher = Enricher.connect(enrichment_plan(spec), redis_url, NAMES, prom)
    full = dict(zip(NAMES, map(float, rows[1])))  # brings every view feature: no key, no lookup
    got = enricher.enrich([request_records([5], rows[:1])[0], full])
    assert got[0] == dict(zip(NAMES, map(float, rows[0]))) and got[1] == full
    view = spec.features.views[0].name
    assert prom.get_sample_value("strata_feature_lookups_total", {"model": "fraud", "view": view, "outcome": "hit"}) == 1
    with pytest.raises(InputError, match="record 0: view .* lacks card_id") as refused:
        enricher.enrich([{k: v for k, v in full.items() if k != "txn_count_24h"}])
    assert refused.value.reason == "missing_field" and refused.value.status == 400
