"""The input contract and the registry layout, in-process (no server, no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.data.schema import Feature, FeatureSchema
from workloads.serving import registry
from workloads.serving.contract import REASONS, InputContract, InputError
from workloads.serving.testing import fraud_schema, sample_rows

SCHEMA = fraud_schema()
CONTRACT = InputContract(SCHEMA, max_batch_rows=64, max_payload_bytes=4096)
ROW = [float(v) for v in sample_rows(SCHEMA, 1, seed=2)[0]]


def test_valid_layouts_agree():
    rows = sample_rows(SCHEMA, 3, seed=1)
    expected = rows.astype(np.float32)
    got = [
        CONTRACT.parse_message({"data": {"ndarray": rows.tolist()}}).features,
        CONTRACT.parse_message({"data": {"tensor": {"shape": [3, 20], "values": rows.ravel().tolist()}}}).features,
        CONTRACT.parse_message({"data": {"names": SCHEMA.names[::-1], "ndarray": rows[:, ::-1].tolist()}}).features,
        CONTRACT.parse_message({"jsonData": [dict(zip(SCHEMA.names, map(float, r))) for r in rows]}).features,
    ]
    for features in got:
        assert features.dtype == np.float32
        np.testing.assert_array_equal(features, expected)


def test_integer_features_and_nullable_imputation():
    schema = FeatureSchema(features=(Feature("count", "int64", 0, 10), Feature("score", "float32", 0, 1, nullable=True)))
    contract = InputContract(schema, impute={"score": 0.5})
    np.testing.assert_array_equal(contract.from_rows([[3, None]]), np.array([[3, 0.5]], dtype=np.float32))
    with pytest.raises(InputError) as err:
        contract.from_rows([[2.5, 0.1]])
    assert err.value.reason == "dtype" and "count" in err.value.message
    strict = InputContract(schema)  # no median for the nullable feature: nulls are rejected
    with pytest.raises(InputError) as err:
        strict.from_rows([[1, None]])
    assert err.value.reason == "null"


def test_limits():
    with pytest.raises(InputError) as err:
        CONTRACT.from_rows([ROW] * 65)
    assert (err.value.reason, err.value.status) == ("batch_too_large", 413)
    with pytest.raises(InputError) as err:
        CONTRACT.check_size(4097)
    assert (err.value.reason, err.value.status) == ("payload_too_large", 413)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5))
json_any = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=25),
                                                          st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                        max_leaves=60)


@settings(max_examples=600, deadline=None)
@given(message=st.one_of(
    json_any,
    st.builds(lambda v: {"data": {"ndarray": v}}, json_any),
    st.builds(lambda s, v: {"data": {"tensor": {"shape": s, "values": v}}}, json_any, json_any),
    st.builds(lambda n, v: {"data": {"names": n, "ndarray": v}}, json_any, json_any),
    st.builds(lambda v: {"jsonData": v}, json_any),
    st.builds(lambda i, j, v: {"data": {"ndarray": [[*ROW[:j], v, *ROW[j + 1:]]] * i}},
              st.integers(1, 3), st.integers(0, 19), json_leaf),
))
def test_contract_total_on_any_json(message):
    """Any JSON value: a validated float32 batch inside the bounds, or an InputError with
    a known reason and a 4xx status. Never another exception."""
    try:
        features = CONTRACT.parse_message(message).features
    except InputError as error:
        assert error.reason in REASONS and 400 <= error.status < 500 and error.message
        return
    low, high = SCHEMA.bounds()
    assert features.dtype == np.float32 and features.ndim == 2 and features.shape[1] == 20 and features.shape[0] >= 1
    assert np.isfinite(features).all() and (features >= low).all() and (features <= high).all()


def test_registry_aliases_and_errors(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "m.pt").write_bytes(b"x")
    SCHEMA.to_json(src / "s.json")
    registry.export_version(tmp_path / "reg", "fraud", "7", src / "m.pt", src / "s.json", aliases=("champion",))
    registry.export_version(tmp_path / "reg", "fraud", "8", src / "m.pt", src / "s.json", aliases=("challenger",))
    assert registry.resolve(tmp_path / "reg", "fraud", alias="champion").version == "7"
    registry.set_alias(tmp_path / "reg", "fraud", "champion", "8")
    assert registry.resolve(tmp_path / "reg", "fraud", alias="champion").version == "8"
    assert json.loads((tmp_path / "reg" / "fraud" / "aliases.json").read_text()) == {"challenger": "8", "champion": "8"}
    with pytest.raises(registry.RegistryError, match="no alias 'shadow'"):
        registry.resolve(tmp_path / "reg", "fraud", alias="shadow")
    with pytest.raises(registry.RegistryError, match="not in the registry export"):
        registry.resolve(tmp_path / "reg", "digits", alias="champion")
    with pytest.raises(registry.RegistryError, match="no version 9"):
        registry.set_alias(tmp_path / "reg", "fraud", "champion", "9")
