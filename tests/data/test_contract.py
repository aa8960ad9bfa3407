"""Row rules from the data contract: ids per broken rule, typed valid rows, table-level errors,
and valid + quarantined == input rows for any input (hypothesis)."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.data.lake.contract import RULES_COLUMN, Contract, ContractError, split
from workloads.data.schema import Feature, FeatureSchema

SCHEMA = FeatureSchema(
    features=(Feature("amount", "float32", 0.0, 1000.0), Feature("count", "int64", 0, 10),
              Feature("score", "float64", 0.0, 1.0, nullable=True)),
    label="is_fraud", label_values=(0, 1),
)
CONTRACT = Contract(SCHEMA, key="txn_id")


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={c: pl.String for c in ("txn_id", "amount", "count", "score", "is_fraud")})


def test_each_broken_rule_is_named_and_valid_rows_are_typed():
    raw = frame([
        {"txn_id": "a", "amount": "10.5", "count": "3", "score": "", "is_fraud": "0"},
        {"txn_id": "b", "amount": "-1", "count": "3", "score": "0.5", "is_fraud": "1"},
        {"txn_id": "c", "amount": "abc", "count": "2.5", "score": "2", "is_fraud": "7"},
        {"txn_id": "d", "amount": None, "count": "11", "score": "0.1", "is_fraud": None},
        {"txn_id": "a", "amount": "inf", "count": "1", "score": "0.1", "is_fraud": "0"},
        {"txn_id": None, "amount": "1", "count": "1", "score": "0.1", "is_fraud": "0"},
    ])
    out = split(CONTRACT, raw)
    assert out.valid.height == 0
    rules = [(r["txn_id"], set(r[RULES_COLUMN])) for r in out.quarantined.iter_rows(named=True)]
    assert rules == [
        ("a", {"txn_id.unique"}),
        ("b", {"amount.min"}),
        ("c", {"amount.type", "count.integer", "score.max", "is_fraud.allowed"}),
        ("d", {"amount.not_null", "count.max", "is_fraud.not_null"}),
        ("a", {"txn_id.unique", "amount.finite"}),
        (None, {"txn_id.not_null"}),
    ]
    assert out.rule_counts["txn_id.unique"] == 2
    assert out.rows == raw.height


def test_valid_rows_are_cast_to_the_contract_dtypes():
    raw = frame([{"txn_id": "a", "amount": " 10.5 ", "count": "3", "score": "", "is_fraud": "1"},
                 {"txn_id": "b", "amount": "0", "count": "10", "score": "1", "is_fraud": "0"}])
    out = split(CONTRACT, raw)
    assert out.quarantined.height == 0 and out.rule_counts == {}
    assert out.valid.schema["amount"] == pl.Float32 and out.valid.schema["count"] == pl.Int64
    assert out.valid.schema["is_fraud"] == pl.Int64
    assert out.valid.get_column("score").to_list()[0] is None  # nullable: kept as null
    assert out.valid.get_column("amount").to_list()[0] == pytest.approx(10.5)


def test_numeric_input_is_checked_without_string_parsing():
    raw = pl.DataFrame({"txn_id": ["a", "b"], "amount": [1.0, math.nan], "count": [1, 2],
                        "score": [0.5, None], "is_fraud": [0, 1]})
    out = split(CONTRACT, raw)
    assert out.valid.get_column("txn_id").to_list() == ["a"]
    assert out.quarantined.row(0, named=True)[RULES_COLUMN] == ["amount.not_null"]


def test_missing_contract_column_names_it():
    raw = frame([{"txn_id": "a", "amount": "1", "count": "1", "score": "", "is_fraud": "0"}]).drop("count")
    with pytest.raises(ContractError, match=r"needs column\(s\) count"):
        split(CONTRACT, raw, where="bronze/x v3")


def test_retyped_column_names_it():
    raw = frame([{"txn_id": str(i), "amount": f"{i} EUR", "count": "1", "score": "", "is_fraud": "0"} for i in range(5)])
    with pytest.raises(ContractError, match=r"retyped.*amount"):
        split(CONTRACT, raw)


def test_extra_columns_pass_through():
    raw = frame([{"txn_id": "a", "amount": "1", "count": "1", "score": "", "is_fraud": "0"}]).with_columns(
        pl.lit("x").alias("merchant"))
    assert split(CONTRACT, raw).valid.get_column("merchant").to_list() == ["x"]


cell = st.one_of(st.none(), st.just(""), st.sampled_from(["abc", "nan", "inf", "-1", "1e9", "2.5"]),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-5, 20).map(str))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries({"txn_id": st.one_of(st.none(), st.sampled_from("abcdefgh")),
                                       "amount": cell, "count": cell, "score": cell,
                                       "is_fraud": st.sampled_from([None, "0", "1", "2", "x", "1.0"])}),
                min_size=0, max_size=40))
def test_valid_plus_quarantined_equals_input(rows):
    raw = frame(rows)
    try:
        out = split(CONTRACT, raw)
    except ContractError as error:  # every value of a column unparseable: a table-level error, not a row rule
        assert "retyped" in str(error)
        return
    assert out.valid.height + out.quarantined.height == raw.height
    assert all(r for r in out.quarantined.get_column(RULES_COLUMN).to_list())  # every rejected row says why
    assert sum(out.rule_counts.values()) >= out.quarantined.height
