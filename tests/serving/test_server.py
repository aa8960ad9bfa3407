"""The real Seldon model server (serving env) over REST and gRPC: predictions equal the
artifact's outputs, every malformed request is a 4xx with a reason in Seldon's error
contract (never a 5xx), a property-based fuzz keeps it that way, and the server keeps
serving throughout."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workloads.serving.contract import REASONS
from workloads.serving.testing import fraud_schema, reference_outputs, sample_rows

SCHEMA = fraud_schema()
NAMES = SCHEMA.names
PREDICT = "/api/v1.0/predictions"
JSON = {"Content-Type": "application/json"}


def post(server, body, headers=JSON, path=PREDICT, **kw):
    data = body if isinstance(body, (bytes, str)) or body is None or hasattr(body, "__next__") else json.dumps(body)
    return requests.post(server.url + path, data=data, headers=headers, timeout=30, **kw)


def assert_rejected(resp, status=None, reason=None, field=None):
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
    if status is not None:
        assert resp.status_code == status, resp.text[:300]
    body = resp.json()
    assert set(body) == {"status"}, body
    info = body["status"]
    assert info["status"] == "FAILURE" and info["code"] == resp.status_code, info
    assert info["reason"] in REASONS, info
    assert info["info"], info
    if reason is not None:
        assert info["reason"] == reason, info
    if field is not None:
        assert field in info["info"], info
    return info


def grpc_send(serving_env, server, messages, service="model"):
    out = subprocess.run(
        [str(serving_env), "-m", "workloads.serving.grpc_client", server.grpc_target, "--service", service],
        input=json.dumps(messages), capture_output=True, text=True, timeout=120,
        cwd=str(serving_env.parents[2]), env={"PYTHONPATH": str(serving_env.parents[2]), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def valid_rows(n=8, seed=1):
    return sample_rows(SCHEMA, n, seed=seed)


# ---------------------------------------------------------------- correct answers


def test_rest_ndarray_equals_artifact(server, registry_root):
    rows = valid_rows(32)
    resp = post(server, {"data": {"ndarray": rows.tolist()}})
    assert resp.status_code == 200, resp.text[:500]
    body = resp.json()
    got = np.asarray(body["data"]["ndarray"], dtype=np.float32)
    np.testing.assert_allclose(got, reference_outputs(registry_root, "fraud", "champion", rows), rtol=1e-5, atol=1e-7)
    assert body["data"]["names"] == ["proba_0", "proba_1"]
    assert body["meta"]["tags"]["model"] == "fraud" and body["meta"]["tags"]["alias"] == "champion"
    assert body["meta"]["tags"]["version"] == "1"


def test_rest_tensor_named_and_records_agree(server, registry_root):
    rows = valid_rows(5, seed=2)
    expected = reference_outputs(registry_root, "fraud", "champion", rows)
    tensor = post(server, {"data": {"tensor": {"shape": list(rows.shape), "values": rows.ravel().tolist()}}})
    assert tensor.status_code == 200, tensor.text[:300]
    t = tensor.json()["data"]["tensor"]
    np.testing.assert_allclose(np.asarray(t["values"]).reshape(t["shape"]), expected, rtol=1e-5, atol=1e-7)
    # named columns in another order: reordered to the schema
    order = list(reversed(range(len(NAMES))))
    named = post(server, {"data": {"names": [NAMES[i] for i in order], "ndarray": rows[:, order].tolist()}})
    assert named.status_code == 200, named.text[:300]
    np.testing.assert_allclose(named.json()["data"]["ndarray"], expected, rtol=1e-5, atol=1e-7)
    records = [dict(zip(NAMES, map(float, row))) for row in rows]
    for payload in ({"instances": records}, records):
        resp = post(server, {"jsonData": payload})
        assert resp.status_code == 200, resp.text[:300]
        np.testing.assert_allclose(resp.json()["data"]["ndarray"], expected, rtol=1e-5, atol=1e-7)
    single = post(server, {"jsonData": records[0]})
    np.testing.assert_allclose(single.json()["data"]["ndarray"], expected[:1], rtol=1e-5, atol=1e-7)


def test_rest_seldon_form_encoding_still_accepted(server, registry_root):
    rows = valid_rows(2, seed=3)
    resp = requests.post(server.url + PREDICT, data={"json": json.dumps({"data": {"ndarray": rows.tolist()}})}, timeout=30)
    assert resp.status_code == 200, resp.text[:300]
    np.testing.assert_allclose(resp.json()["data"]["ndarray"], reference_outputs(registry_root, "fraud", "champion", rows),
                               rtol=1e-5, atol=1e-7)


def test_grpc_predictions_equal_artifact(serving_env, server, registry_root):
    rows = valid_rows(16, seed=4)
    expected = reference_outputs(registry_root, "fraud", "champion", rows)
    messages = [
        {"data": {"tensor": {"shape": list(rows.shape), "values": rows.ravel().tolist()}}},
        {"data": {"ndarray": rows.tolist()}},
        {"data": {"names": NAMES[::-1], "ndarray": rows[:, ::-1].tolist()}},
        {"jsonData": {"instances": [dict(zip(NAMES, map(float, row))) for row in rows]}},
    ]
    for service in ("model", "seldon"):
        results = grpc_send(serving_env, server, messages, service)
        for result in results:
            assert result["grpc_code"] == "OK", result
            data = result["response"]["data"]
            got = np.asarray(data["tensor"]["values"]).reshape(data["tensor"]["shape"]) if "tensor" in data else np.asarray(data["ndarray"])
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
            assert result["response"]["meta"]["tags"]["version"] == "1"


def test_challenger_alias_serves_its_own_version(serving_env, registry_root, tmp_path):
    from tests.serving.conftest import start_server

    rows = valid_rows(4, seed=5)
    with start_server(registry_root, tmp_path, alias="challenger") as challenger:
        resp = post(challenger, {"data": {"ndarray": rows.tolist()}})
        assert resp.status_code == 200
        assert resp.json()["meta"]["tags"]["version"] == "2"
        np.testing.assert_allclose(resp.json()["data"]["ndarray"],
                                   reference_outputs(registry_root, "fraud", "challenger", rows), rtol=1e-5, atol=1e-7)
        assert not np.allclose(resp.json()["data"]["ndarray"], reference_outputs(registry_root, "fraud", "champion", rows))


def test_health_readiness_and_metadata(server):
    assert requests.get(server.url + "/health/ping", timeout=5).status_code == 200
    status = requests.get(server.url + "/health/status", timeout=5)
    assert status.status_code == 200
    ready = status.json()["jsonData"]
    assert ready["ready"] is True and ready["model"] == "fraud" and ready["version"] == "1"
    meta = requests.get(server.url + "/api/v1.0/metadata", timeout=5).json()
    assert meta["inputs"][0]["schema"]["names"] == NAMES


# ---------------------------------------------------------------- malformed input

ROW = [float(v) for v in sample_rows(SCHEMA, 1, seed=9)[0]]


def with_cell(value, column=0):
    row = list(ROW)
    row[column] = value
    return {"data": {"ndarray": [row]}}


MALFORMED = [
    # (id, body, headers, status, reason, field named in info)
    ("string-value", with_cell("12.5", 3), JSON, 400, "dtype", NAMES[3]),
    ("bool-value", with_cell(True, 12), JSON, 400, "dtype", NAMES[12]),
    ("object-value", with_cell({"x": 1}, 1), JSON, 400, "dtype", NAMES[1]),
    ("null-value", with_cell(None, 2), JSON, 400, "null", NAMES[2]),
    ("nan", json.dumps(with_cell(float("nan"), 4)), JSON, 400, "nan", NAMES[4]),
    ("inf", json.dumps(with_cell(float("inf"), 5)), JSON, 400, "nan", NAMES[5]),
    ("-inf", json.dumps(with_cell(float("-inf"), 6)), JSON, 400, "nan", NAMES[6]),
    ("below-range", with_cell(-1.0, 0), JSON, 400, "range", NAMES[0]),
    ("above-range", with_cell(1e12, 9), JSON, 400, "range", NAMES[9]),
    ("huge-int", with_cell(10**400, 7), JSON, 400, "range", NAMES[7]),
    ("short-row", {"data": {"ndarray": [ROW[:-1]]}}, JSON, 400, "shape", "row 0"),
    ("long-row", {"data": {"ndarray": [ROW + [1.0]]}}, JSON, 400, "shape", "row 0"),
    ("ragged", {"data": {"ndarray": [ROW, ROW[:3]]}}, JSON, 400, "shape", "row 1"),
    ("1-d", {"data": {"ndarray": ROW}}, JSON, 400, "shape", "row 0"),
    ("3-d", {"data": {"ndarray": [[ROW]]}}, JSON, 400, "shape", "row 0"),
    ("scalar", {"data": {"ndarray": 3}}, JSON, 400, "shape", "ndarray"),
    ("empty-batch", {"data": {"ndarray": []}}, JSON, 400, "empty_batch", None),
    ("empty-tensor", {"data": {"tensor": {"shape": [0, 20], "values": []}}}, JSON, 400, "empty_batch", None),
    ("tensor-count", {"data": {"tensor": {"shape": [2, 20], "values": ROW}}}, JSON, 400, "shape", "values"),
    ("tensor-width", {"data": {"tensor": {"shape": [1, 19], "values": ROW[:19]}}}, JSON, 400, "shape", "shape"),
    ("missing-name", {"data": {"names": NAMES[:-1], "ndarray": [ROW[:-1]]}}, JSON, 400, "missing_field", NAMES[-1]),
    ("extra-name", {"data": {"names": NAMES + ["zip"], "ndarray": [ROW + [1.0]]}}, JSON, 400, "extra_field", "zip"),
    ("dup-name", {"data": {"names": NAMES[:-1] + [NAMES[0]], "ndarray": [ROW]}}, JSON, 400, "extra_field", NAMES[0]),
    ("record-missing", {"jsonData": {n: 1.0 for n in NAMES[1:]}}, JSON, 400, "missing_field", NAMES[0]),
    ("record-extra", {"jsonData": {**dict(zip(NAMES, ROW)), "merchant_id": 7}}, JSON, 400, "extra_field", "merchant_id"),
    ("record-string", {"jsonData": [{**dict(zip(NAMES, ROW)), "online": "yes"}]}, JSON, 400, "dtype", "online"),
    ("records-empty", {"jsonData": {"instances": []}}, JSON, 400, "empty_batch", None),
    ("strData", {"strData": "hello"}, JSON, 400, "unsupported_format", "strData"),
    ("binData", {"binData": "aGVsbG8="}, JSON, 400, "unsupported_format", "binData"),
    ("no-data", {"meta": {}}, JSON, 400, "unsupported_format", None),
    ("json-array", [ROW], JSON, 400, "not_json", None),
    ("json-string", "\"hello\"", JSON, 400, "not_json", None),
    ("json-null", "null", JSON, 400, "not_json", None),
    ("json-number", "3", JSON, 400, "not_json", None),
    ("not-json", "amount=1", JSON, 400, "not_json", None),
    ("truncated-json", '{"data": {"ndarray": [[1, 2', JSON, 400, "not_json", None),
    ("bad-utf8", b'{"data": "\xff\xfe"}', JSON, 400, "not_json", None),
    ("deep-nesting", "[" * 100_000 + "]" * 100_000, JSON, 400, "not_json", None),
    ("empty-body", b"", JSON, 400, "not_json", None),
    ("text-plain", json.dumps(with_cell(1.0)), {"Content-Type": "text/plain"}, 415, "unsupported_media_type", "text/plain"),
    ("no-content-type", json.dumps(with_cell(1.0)).encode(), {"Content-Type": ""}, 415, "unsupported_media_type", None),
    ("xml", "<x/>", {"Content-Type": "application/xml"}, 415, "unsupported_media_type", None),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_rest_is_4xx_with_reason(server, case):
    _id, body, headers, status, reason, field = case
    assert_rejected(post(server, body, headers=headers), status, reason, field)


def test_oversized_payload_and_batch(server):
    limit = server.config.max_payload_bytes
    big = {"data": {"ndarray": [ROW] * (limit // len(json.dumps(ROW)) + 10)}}
    assert_rejected(post(server, big), 413, "payload_too_large")
    chunks = iter([b'{"data": {"ndarray": [', *([json.dumps(ROW).encode() + b","] * 4000), json.dumps(ROW).encode(), b"]}}"])
    assert_rejected(post(server, chunks), 413, "payload_too_large")  # chunked: no Content-Length
    rows = server.config.max_batch_rows + 1
    assert_rejected(post(server, {"data": {"tensor": {"shape": [rows, 20], "values": ROW * rows}}}), 413, "batch_too_large")


def test_wrong_path_and_method_are_4xx(server):
    # Seldon's app serves static files at "/<path>" for GET, so a GET here is a 404
    assert requests.get(server.url + PREDICT, timeout=5).status_code in (404, 405)
    assert_rejected(requests.get(server.url + PREDICT, timeout=5))
    for resp in (requests.post(server.url + "/api/v1.0/nope", json={}, timeout=5),
                 requests.put(server.url + "/predict", json=with_cell(1.0), timeout=5),
                 requests.delete(server.url + PREDICT, timeout=5)):
        info = assert_rejected(resp)
        assert info["reason"] == {404: "not_found", 405: "method_not_allowed"}[resp.status_code]


def test_malformed_grpc_is_invalid_argument_with_reason(serving_env, server):
    cases = [
        ({"data": {"tensor": {"shape": [1, 20], "values": [*ROW[:3], "NaN", *ROW[4:]]}}}, "nan", NAMES[3]),
        ({"data": {"tensor": {"shape": [1, 20], "values": [*ROW[:5], "Infinity", *ROW[6:]]}}}, "nan", NAMES[5]),
        ({"data": {"tensor": {"shape": [1, 19], "values": ROW[:19]}}}, "shape", "shape"),
        ({"data": {"tensor": {"shape": [2, 20], "values": ROW}}}, "shape", "values"),
        ({"data": {"tensor": {"shape": [0, 20], "values": []}}}, "empty_batch", None),
        ({"data": {"ndarray": [[*ROW[:2], "x", *ROW[3:]]]}}, "dtype", NAMES[2]),
        ({"data": {"ndarray": [[*ROW[:8], -5.0, *ROW[9:]]]}}, "range", NAMES[8]),
        ({"data": {"names": NAMES[:-1], "ndarray": [ROW[:-1]]}}, "missing_field", NAMES[-1]),
        ({"jsonData": {**dict(zip(NAMES, ROW)), "extra": 1}}, "extra_field", "extra"),
        ({"strData": "hello"}, "unsupported_format", None),
        ({}, "unsupported_format", None),
        ({"data": {"tensor": {"shape": [400, 20], "values": ROW * 400}}}, "batch_too_large", None),
        ({"data": {"tensor": {"shape": [2000, 20], "values": ROW * 2000}}}, "payload_too_large", None),
    ]
    for service in ("model", "seldon"):
        results = grpc_send(serving_env, server, [c[0] for c in cases], service)
        for (message, reason, field), result in zip(cases, results):
            assert result["grpc_code"] == "INVALID_ARGUMENT", (message, result)
            assert result["details"].startswith(f"{reason}: "), result
            assert result["trailers"]["strata-reason"] == reason, result
            assert 400 <= int(result["trailers"]["strata-code"]) < 500, result
            if field:
                assert field in result["details"], result


def test_grpc_bytes_that_are_not_a_seldon_message_are_invalid_argument(serving_env, server):
    """Undecodable protobuf never reaches Seldon: INVALID_ARGUMENT, not grpc's INTERNAL."""
    script = (
        "import grpc, json, sys\n"
        "channel = grpc.insecure_channel(sys.argv[1])\n"
        "call = channel.unary_unary('/seldon.protos.Model/Predict')\n"
        "out = []\n"
        "for raw in (b'\\xff\\xff\\xff', b'\\x0a\\x05ab', b'\\x12\\x80\\x80\\x80\\x80\\x10'):\n"
        "    try:\n"
        "        call(raw, timeout=10); out.append(['OK', ''])\n"
        "    except grpc.RpcError as e:\n"
        "        out.append([e.code().name, e.details()])\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(serving_env), "-c", script, server.grpc_target], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    for code, details in json.loads(done.stdout):
        assert code == "INVALID_ARGUMENT", (code, details)
        assert details.startswith("bad_request: the request is not a SeldonMessage"), details


# ---------------------------------------------------------------- fuzz

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=6), inner, max_size=6)), max_leaves=40)


@st.composite
def mutated_message(draw):
    """A valid message with one thing broken (or not): the interesting neighbourhood."""
    rows = draw(st.integers(min_value=0, max_value=4))
    base = [list(ROW) for _ in range(rows)]
    layout = draw(st.sampled_from(["ndarray", "tensor", "records", "named"]))
    if base and draw(st.booleans()):
        i = draw(st.integers(0, rows - 1))
        j = draw(st.integers(0, len(ROW) - 1))
        base[i][j] = draw(json_leaf)
    if base and draw(st.integers(0, 4)) == 0:
        base[0] = base[0][: draw(st.integers(0, len(ROW)))]
    if layout == "ndarray":
        return {"data": {"ndarray": base}}
    if layout == "tensor":
        flat = [v for row in base for v in row]
        shape = draw(st.sampled_from([[rows, 20], [rows, 19], [rows * 20], [rows, 20, 1], [-1, 20]]))
        return {"data": {"tensor": {"shape": shape, "values": flat}}}
    if layout == "named":
        names = draw(st.permutations(NAMES))
        if draw(st.booleans()):
            names = names[:-1] + [draw(st.text(max_size=6))]
        return {"data": {"names": names, "ndarray": base}}
    records = [dict(zip(NAMES, row)) for row in base]
    if records and draw(st.booleans()):
        records[0].pop(draw(st.sampled_from(NAMES)), None)
        records[0][draw(st.text(max_size=5))] = draw(json_leaf)
    return {"jsonData": {"instances": records}}


def _check_fuzz_answer(resp):
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        assert_rejected(resp)
    else:
        assert resp.status_code == 200
        assert "data" in resp.json()


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(message=mutated_message())
def test_fuzz_mutated_messages(server, message):
    _check_fuzz_answer(post(server, json.dumps(message, allow_nan=True)))


@FUZZ
@given(body=json_value)
def test_fuzz_arbitrary_json(server, body):
    _check_fuzz_answer(post(server, json.dumps(body, allow_nan=True)))
    _check_fuzz_answer(post(server, json.dumps({"data": body}, allow_nan=True)))
    _check_fuzz_answer(post(server, json.dumps({"jsonData": body}, allow_nan=True)))


@FUZZ
@given(body=st.binary(max_size=512), ctype=st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]))
def test_fuzz_raw_bytes(server, body, ctype):
    _check_fuzz_answer(post(server, body, headers={"Content-Type": ctype}))


# ---------------------------------------------------------------- still serving, metrics


def test_zz_still_serving_and_metrics_show_no_5xx(serving_env, server, registry_root):
    """Runs last in this module: after everything above, the same worker answers, and
    its metrics (REST and gRPC processes aggregated) show 4xx by reason and no 5xx."""
    rows = valid_rows(3, seed=11)
    resp = post(server, {"data": {"ndarray": rows.tolist()}})
    assert resp.status_code == 200
    np.testing.assert_allclose(resp.json()["data"]["ndarray"], reference_outputs(registry_root, "fraud", "champion", rows),
                               rtol=1e-5, atol=1e-7)
    assert server.proc.poll() is None
    text = requests.get(server.url + "/metrics", timeout=10).text
    codes = {}
    for match in re.finditer(r'^strata_serving_requests_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        codes[(labels["protocol"], labels["code"])] = codes.get((labels["protocol"], labels["code"]), 0) + float(match.group(2))
    assert codes.get(("rest", "200"), 0) >= 5, codes
    assert codes.get(("rest", "400"), 0) >= 30, codes
    assert not [k for k in codes if k[1].startswith("5")], codes
    assert 'team="payments-risk"' in text and 'predictor="champion"' in text
    for reason in ("dtype", "nan", "range", "shape", "missing_field", "payload_too_large", "unsupported_media_type", "not_json"):
        assert re.search(rf'strata_serving_rejected_requests_total\{{[^}}]*reason="{reason}"', text), reason
    assert 'strata_serving_request_duration_seconds_bucket{' in text and 'le="0.2"' in text
    assert "strata_serving_batch_rows_bucket" in text
    assert "strata_serving_prediction_score_bucket" in text
    assert "strata_serving_in_flight_requests" in text
    # gRPC goes through its own process; its series land in the same exposition
    grpc_send(serving_env, server, [{"data": {"ndarray": rows.tolist()}}])
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert re.search(r'strata_serving_requests_total\{[^}]*protocol="grpc"', text)
