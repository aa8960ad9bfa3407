"""Two real Seldon model servers (champion as `stable`, challenger as `candidate`) behind the
real nginx proxy: every answer is labelled with the arm that produced it, and it is that
arm's model's answer."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time

import numpy as np
import pytest

from tests.serving.conftest import registry_root, serving_env, start_server  # noqa: F401 (fixtures)
from tests.traffic.conftest import PREDICT_PATH
from workloads.serving.testing import fraud_schema, reference_outputs, sample_rows
from workloads.traffic.local_proxy import LocalProxyRouter
from workloads.traffic.split import ALIAS_OF_PREDICTOR, CANDIDATE, PREDICTORS, STABLE, TrafficSplit
from workloads.traffic.state import register_upstream, unregister_upstream


@pytest.fixture(scope="module")
def seldon_pair(serving_env, registry_root, tmp_path_factory, local_services):  # noqa: F811
    """fraud's champion and challenger servers, registered with the session's proxy (REST and
    gRPC); each test sets the split it needs."""
    tmp_path = tmp_path_factory.mktemp("seldon-pair")
    local_services("proxy")
    router = LocalProxyRouter(local_services.state_dir)
    servers: dict[str, object] = {}
    errors: list[BaseException] = []

    def start(predictor: str) -> None:
        try:
            servers[predictor] = start_server(registry_root, tmp_path, alias=ALIAS_OF_PREDICTOR[predictor],
                                              predictor=predictor)
        except BaseException as exc:  # reported below, after both tries
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in PREDICTORS]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        for predictor, server in servers.items():
            register_upstream(router.state_dir, "fraud", predictor, server.config.http_port,
                              grpc_port=server.config.grpc)
        router.refresh()
        yield router, servers
    finally:
        unregister_upstream(router.state_dir, "fraud")
        router.refresh()
        for server in servers.values():
            server.stop()


def predict(port: int, rows: np.ndarray) -> tuple[int, str | None, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", f"/fraud{PREDICT_PATH}", body=json.dumps({"data": {"ndarray": rows.tolist()}}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.getheader("X-Strata-Predictor"), json.loads(resp.read())
    finally:
        conn.close()


def served_requests(server, predictor: str) -> float:
    """strata_serving_requests_total of one server (its own /metrics), all codes."""
    conn = http.client.HTTPConnection("127.0.0.1", server.config.http_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("strata_serving_requests_total{") and f'predictor="{predictor}"' in line)


def test_seldon_answers_through_the_proxy_are_labelled_by_predictor(seldon_pair, registry_root):  # noqa: F811
    router, servers = seldon_pair
    port = router.running()[1]
    schema = fraud_schema()

    router.apply(TrafficSplit.weighted("fraud", 50))
    seen = {STABLE: 0, CANDIDATE: 0}
    for i in range(60):
        rows = sample_rows(schema, 4, seed=1000 + i)
        status, arm, body = predict(port, rows)
        assert status == 200, body
        tags = body["meta"]["tags"]
        assert arm in PREDICTORS and tags["predictor"] == arm, (arm, tags)
        assert tags["alias"] == ALIAS_OF_PREDICTOR[arm]
        expected = reference_outputs(registry_root, "fraud", ALIAS_OF_PREDICTOR[arm], rows)
        np.testing.assert_allclose(np.asarray(body["data"]["ndarray"], dtype=np.float32), expected, rtol=1e-5, atol=1e-7)
        seen[arm] += 1
    assert seen[STABLE] and seen[CANDIDATE], seen  # 60 draws at 50%: both arms (p = 2e-18)
    # the two versions really differ, so the label is not vacuous
    rows = sample_rows(schema, 8, seed=7)
    assert not np.allclose(reference_outputs(registry_root, "fraud", "champion", rows),
                           reference_outputs(registry_root, "fraud", "challenger", rows))

    # shadow: clients get the champion's answers, the challenger scores a copy of each
    router.apply(TrafficSplit.mirrored("fraud"))
    before = served_requests(servers[CANDIDATE], CANDIDATE)
    for i in range(20):
        rows = sample_rows(schema, 2, seed=2000 + i)
        status, arm, body = predict(port, rows)
        assert (status, arm, body["meta"]["tags"]["alias"]) == (200, STABLE, "champion")
    deadline = time.monotonic() + 20
    while served_requests(servers[CANDIDATE], CANDIDATE) < before + 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served_requests(servers[CANDIDATE], CANDIDATE) == before + 20

    router.apply(TrafficSplit.all_stable("fraud"))
    assert {predict(port, sample_rows(schema, 1, seed=i))[1] for i in range(20)} == {STABLE}


def grpc_via_proxy(serving_env, target: str, messages: list, *metadata: str) -> list[dict]:  # noqa: F811
    """Seldon's Predict through the proxy's gRPC port (the client runs in the serving env)."""
    flags = [flag for item in metadata for flag in ("--metadata", item)]
    out = subprocess.run([str(serving_env), "-m", "workloads.serving.grpc_client", target, *flags],
                         input=json.dumps(messages), capture_output=True, text=True, timeout=120,
                         cwd=str(serving_env.parents[2]),
                         env={"PYTHONPATH": str(serving_env.parents[2]), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_grpc_through_the_proxy_follows_the_split_for_the_model_its_seldon_metadata_names(
        seldon_pair, serving_env, registry_root):  # noqa: F811
    router, servers = seldon_pair
    target = f"127.0.0.1:{router.grpc_port()}"
    schema = fraud_schema()

    router.apply(TrafficSplit.weighted("fraud", 50))
    batches = [sample_rows(schema, 4, seed=3000 + i) for i in range(40)]
    answers = grpc_via_proxy(serving_env, target, [{"data": {"ndarray": rows.tolist()}} for rows in batches],
                             "seldon=fraud")
    seen = {STABLE: 0, CANDIDATE: 0}
    for rows, answer in zip(batches, answers):
        assert answer["grpc_code"] == "OK", answer
        arm = answer["headers"]["x-strata-predictor"]
        tags = answer["response"]["meta"]["tags"]
        assert tags["predictor"] == arm and tags["alias"] == ALIAS_OF_PREDICTOR[arm], (arm, tags)
        expected = reference_outputs(registry_root, "fraud", ALIAS_OF_PREDICTOR[arm], rows)
        np.testing.assert_allclose(np.asarray(answer["response"]["data"]["ndarray"], dtype=np.float32), expected,
                                   rtol=1e-5, atol=1e-7)
        seen[arm] += 1
    assert seen[STABLE] and seen[CANDIDATE], seen  # 40 draws at 50%: both arms (p = 2e-12)

    # the model server's contract passes through: a malformed tensor is INVALID_ARGUMENT with its reason
    [bad] = grpc_via_proxy(serving_env, target, [{"data": {"ndarray": [[1.0, 2.0]]}}], "seldon=fraud")
    assert bad["grpc_code"] == "INVALID_ARGUMENT" and bad["trailers"]["strata-reason"], bad

    # a model the proxy does not route, or no `seldon` metadata at all: NOT_FOUND naming what is routed
    for metadata in (("seldon=nope",), ()):
        [lost] = grpc_via_proxy(serving_env, target, [{"data": {"ndarray": batches[0].tolist()}}], *metadata)
        assert lost["grpc_code"] == "NOT_FOUND" and "unknown_model" in lost["details"] and "fraud" in lost["details"], lost

    router.apply(TrafficSplit.all_stable("fraud"))
    answers = grpc_via_proxy(serving_env, target, [{"data": {"ndarray": rows.tolist()}} for rows in batches[:10]],
                             "seldon=fraud")
    assert {a["headers"]["x-strata-predictor"] for a in answers} == {STABLE}
