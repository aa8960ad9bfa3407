"""The input contract of a served model: request payload -> validated float32 batch.

numpy only (no torch, no Flask, no protobuf at import time), so the Seldon wrapper, the
stream worker and tests share it. Every rejection is an `InputError` with an HTTP status,
a reason from a closed set (the `reason` label of `strata_serving_rejected_requests_total`
and of `strata_stream_dead_letter_messages_total`) and a message that names the bad
field, row and value.

Accepted shapes (Seldon Core v1 protocol):

* ``{"data": {"ndarray": [[...], ...]}}``: rows in schema order;
* ``{"data": {"names": [...], "ndarray": [[...]]}}``: named columns, any order, all of them;
* ``{"data": {"tensor": {"shape": [n, width], "values": [...]}}}`` (names optional, as above);
* ``{"jsonData": {"instances": [{"amount": 12.5, ...}, ...]}}``, a list of such records,
  or one record: named features, missing or extra fields are named in the error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from workloads.data.schema import FeatureSchema

# The closed set of rejection reasons (metric label values).
REASONS = (
    "not_json",  # body is not JSON / not an object
    "unsupported_media_type",  # Content-Type is not application/json (or Seldon's form encodings)
    "payload_too_large",  # body over serving.realtime.maxPayloadBytes
    "batch_too_large",  # rows over serving.realtime.maxBatchRows
    "empty_batch",  # zero rows
    "unsupported_format",  # strData/binData/unknown message layout
    "shape",  # not [rows, width], ragged rows
    "dtype",  # a value that is not a number (string, bool, object) or not integral for int features
    "nan",  # NaN or +-inf
    "null",  # null for a non-nullable feature
    "range",  # outside the feature's [low, high]
    "missing_field",  # named input lacks a schema feature
    "extra_field",  # named input has a field the schema does not know
    "not_found",  # unknown path
    "method_not_allowed",
    "bad_request",  # any other client error
    "feature_store_unavailable",  # the online feature store is down and the spec says reject (503)
    "overloaded",  # shed: waited past the server's queue budget (503 + Retry-After; gRPC UNAVAILABLE)
)
_INT_DTYPES = ("int32", "int64")


class InputError(ValueError):
    """A request the model must not see. `status` is the HTTP status (4xx)."""

    def __init__(self, reason: str, message: str, status: int = 400, field: str | None = None):
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.field = field

    def seldon_status(self) -> dict[str, Any]:
        """Seldon Core's error contract (`status` of a SeldonMessage)."""
        return {"status": {"code": self.status, "info": self.message, "reason": self.reason, "status": "FAILURE"}}


@dataclass(frozen=True)
class ParsedRequest:
    features: np.ndarray  # float32 [rows, width], schema order
    layout: str  # ndarray | tensor | jsonData (the response mirrors it)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or isinstance(value, np.number)


class InputContract:
    """Validates payloads against one model version's feature schema and serving limits."""

    def __init__(
        self,
        schema: FeatureSchema,
        max_batch_rows: int = 1024,
        max_payload_bytes: int = 1_048_576,
        impute: Mapping[str, float] | None = None,
    ):
        self.schema = schema
        self.names = schema.names
        self.width = schema.width
        self.index = {name: i for i, name in enumerate(self.names)}
        self.max_batch_rows = int(max_batch_rows)
        self.max_payload_bytes = int(max_payload_bytes)
        self.low, self.high = schema.bounds()
        self.int_columns = np.array([f.dtype in _INT_DTYPES for f in schema.features])
        self.nullable = np.array([f.nullable for f in schema.features])
        # value used for null in a nullable feature (the reference profile's median); a
        # nullable feature without one rejects nulls like any other
        self.impute = {k: float(v) for k, v in (impute or {}).items() if k in self.index}
        self.has_int = bool(self.int_columns.any())

    # ------------------------------------------------------------------ entry points

    def check_size(self, size: int | None) -> None:
        if size is not None and size > self.max_payload_bytes:
            raise InputError(
                "payload_too_large",
                f"payload is {size} bytes; the limit (serving.realtime.maxPayloadBytes) is {self.max_payload_bytes}",
                status=413,
            )

    def parse_message(self, message: Any) -> ParsedRequest:
        """A decoded Seldon JSON message (dict) -> validated batch."""
        if not isinstance(message, dict):
            raise InputError("not_json", f"the body must be a JSON object, got {type(message).__name__}")
        if "data" in message:
            unknown = sorted(k for k in message if k not in ("data", "meta"))
            if unknown:
                raise InputError("extra_field", f"unexpected top-level field(s) {unknown}; use 'data' or 'jsonData'", field=unknown[0])
            return self.parse_data(message["data"])
        if "jsonData" in message:
            return ParsedRequest(self.from_records(message["jsonData"]), "jsonData")
        for key in ("strData", "binData"):
            if key in message:
                raise InputError("unsupported_format", f"{key} is not accepted by this model; send data.ndarray, data.tensor or jsonData", field=key)
        raise InputError(
            "unsupported_format",
            f"expected a 'data' (ndarray/tensor) or 'jsonData' field, got {sorted(message)[:5] or 'an empty object'}",
        )

    def parse_data(self, data: Any) -> ParsedRequest:
        if not isinstance(data, dict):
            raise InputError("unsupported_format", f"'data' must be an object with 'ndarray' or 'tensor', got {type(data).__name__}", field="data")
        names = data.get("names")
        unknown = sorted(k for k in data if k not in ("names", "ndarray", "tensor"))
        if unknown:
            raise InputError("unsupported_format", f"data.{unknown[0]} is not supported; send data.ndarray or data.tensor", field=f"data.{unknown[0]}")
        if "ndarray" in data:
            return ParsedRequest(self.from_rows(data["ndarray"], names), "ndarray")
        if "tensor" in data:
            tensor = data["tensor"]
            if not isinstance(tensor, dict):
                raise InputError("unsupported_format", "data.tensor must be an object {shape, values}", field="data.tensor")
            return ParsedRequest(self.from_tensor(tensor.get("shape"), tensor.get("values"), names), "tensor")
        raise InputError("unsupported_format", "data needs 'ndarray' or 'tensor'", field="data")

    # ------------------------------------------------------------------ layouts

    def from_rows(self, rows: Any, names: Any = None) -> np.ndarray:
        """Rows (list of lists) with optional column names -> validated float32 batch."""
        if not isinstance(rows, (list, tuple)):
            raise InputError("shape", f"data.ndarray must be a list of rows, got {type(rows).__name__}", field="data.ndarray")
        if len(rows) == 0:
            raise InputError("empty_batch", "the batch has no rows", field="data.ndarray")
        self._check_rows(len(rows))
        order = self._column_order(names)
        width = len(order) if order is not None else self.width
        arr = self._to_float_matrix(rows, width, order)
        return self._finish(arr, order)

    def from_tensor(self, shape: Any, values: Any, names: Any = None) -> np.ndarray:
        if not isinstance(shape, (list, tuple)) or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in shape):
            raise InputError("shape", f"data.tensor.shape must be a list of integers, got {_describe(shape)}", field="data.tensor.shape")
        shape = [int(s) for s in shape]
        if not isinstance(values, (list, tuple, np.ndarray)):
            raise InputError("shape", "data.tensor.values must be a list of numbers", field="data.tensor.values")
        order = self._column_order(names)
        width = len(order) if order is not None else self.width
        if len(shape) != 2:
            raise InputError("shape", f"data.tensor.shape must be [rows, {width}], got {shape}", field="data.tensor.shape")
        if shape[0] == 0 or len(values) == 0:
            raise InputError("empty_batch", "the batch has no rows", field="data.tensor")
        if shape[0] < 0 or shape[1] != width:
            raise InputError("shape", f"data.tensor.shape must be [rows, {width}], got {shape}", field="data.tensor.shape")
        self._check_rows(shape[0])
        if shape[0] * shape[1] != len(values):
            raise InputError(
                "shape",
                f"data.tensor.shape {shape} needs {shape[0] * shape[1]} values, got {len(values)}",
                field="data.tensor.values",
            )
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            flat = values.astype(np.float64, copy=False)
        else:
            flat = self._numeric_vector(values, width, order)
        return self._finish(flat.reshape(shape[0], shape[1]), order)

    def from_records(self, payload: Any) -> np.ndarray:
        """jsonData: {"instances": [record, ...]}, [record, ...] or one record."""
        if isinstance(payload, dict) and "instances" in payload:
            extra = sorted(k for k in payload if k != "instances")
            if extra:
                raise InputError("extra_field", f"jsonData has unexpected field(s) {extra} beside 'instances'", field=f"jsonData.{extra[0]}")
            records, where = payload["instances"], "jsonData.instances"
        elif isinstance(payload, dict):
            records, where = [payload], "jsonData"
        else:
            records, where = payload, "jsonData"
        if not isinstance(records, list):
            raise InputError("shape", f"{where} must be a list of records (objects), got {type(records).__name__}", field=where)
        if not records:
            raise InputError("empty_batch", "the batch has no rows", field=where)
        self._check_rows(len(records))
        expected = self.index
        rows = []
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise InputError("shape", f"{where}[{i}] must be an object of feature -> value, got {type(record).__name__}", field=f"{where}[{i}]")
            if len(record) != self.width or any(k not in expected for k in record):
                missing = [n for n in self.names if n not in record]
                extra = [k for k in record if k not in expected]
                if missing:
                    raise InputError(
                        "missing_field", f"{where}[{i}] is missing feature(s) {', '.join(missing[:10])}", field=missing[0]
                    )
                raise InputError(
                    "extra_field", f"{where}[{i}] has unknown field(s) {', '.join(map(str, extra[:10]))}", field=str(extra[0])
                )
            rows.append([record[name] for name in self.names])
        return self._finish(self._to_float_matrix(rows, self.width, None), None)

    # ------------------------------------------------------------------ helpers

    def _check_rows(self, rows: int) -> None:
        if rows > self.max_batch_rows:
            raise InputError(
                "batch_too_large",
                f"the batch has {rows} rows; the limit (serving.realtime.maxBatchRows) is {self.max_batch_rows}",
                status=413,
            )

    def _column_order(self, names: Any) -> list[int] | None:
        """Schema index of each given column (None: positional, schema order)."""
        if names is None:
            return None
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise InputError("shape", "data.names must be a list of feature names", field="data.names")
        if len(names) == 0 or list(names) == self.names:
            return None
        seen = set()
        for name in names:
            if name not in self.index:
                raise InputError("extra_field", f"data.names has unknown feature {name!r}", field=name)
            if name in seen:
                raise InputError("extra_field", f"data.names lists feature {name!r} twice", field=name)
            seen.add(name)
        missing = [n for n in self.names if n not in seen]
        if missing:
            raise InputError("missing_field", f"data.names is missing feature(s) {', '.join(missing[:10])}", field=missing[0])
        return [self.index[n] for n in names]

    def _feature(self, column: int, order: list[int] | None) -> str:
        return self.names[order[column] if order is not None else column]

    def _to_float_matrix(self, rows: Sequence[Any], width: int, order: list[int] | None) -> np.ndarray:
        try:
            arr = np.asarray(rows)
        except (ValueError, TypeError, OverflowError, RecursionError):
            arr = None  # ragged or mixed: located below
        if arr is not None and arr.ndim == 2 and arr.dtype.kind in "fiu" and arr.shape[1] == width:
            # numbers only; bools silently became numbers if mixed with them: look once
            if arr.dtype.kind != "f" or self._has_bool(rows):
                self._scan(rows, width, order)
            return arr.astype(np.float64, copy=False)
        self._scan(rows, width, order)  # raises with the offending row/column
        # every value is a number or an imputable null: huge integers and nulls remain
        return self._objects_to_float(rows, order)

    def _objects_to_float(self, rows: Sequence[Any], order: list[int] | None) -> np.ndarray:
        out = np.empty((len(rows), len(rows[0]) if rows else 0), dtype=np.float64)
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                name = self._feature(j, order)
                if value is None:
                    out[i, j] = self.impute[name]
                    continue
                try:
                    out[i, j] = float(value)
                except (OverflowError, ValueError, TypeError):
                    raise InputError("range", f"feature {name!r} (row {i}) is {_describe(value)}, beyond float64", field=name) from None
        return out

    @staticmethod
    def _has_bool(rows: Sequence[Any]) -> bool:
        return any(type(v) is bool for row in rows for v in row)

    def _scan(self, rows: Sequence[Any], width: int, order: list[int] | None) -> None:
        """Find the first structural or type problem, row by row (slow path)."""
        for i, row in enumerate(rows):
            if not isinstance(row, (list, tuple)):
                raise InputError(
                    "shape",
                    f"row {i} must be a list of {width} values, got {_describe(row)} (a batch is [[...], ...])",
                    field=f"row {i}",
                )
            if len(row) != width:
                raise InputError(
                    "shape",
                    f"row {i} has {len(row)} values; the model takes {width} ({', '.join(self.names[:3])}, ...)",
                    field=f"row {i}",
                )
            for j, value in enumerate(row):
                if _is_number(value):
                    continue
                name = self._feature(j, order)
                if value is None:
                    if self.nullable[self.index[name]] and name in self.impute:
                        continue
                    raise InputError("null", f"feature {name!r} (row {i}) is null and not nullable", field=name)
                raise InputError(
                    "dtype",
                    f"feature {name!r} (row {i}) must be a number ({self.schema.features[self.index[name]].dtype}), "
                    f"got {type(value).__name__} {_describe(value)}",
                    field=name,
                )

    def _numeric_vector(self, values: Sequence[Any], width: int, order: list[int] | None) -> np.ndarray:
        try:
            arr = np.asarray(values)
        except (ValueError, TypeError, OverflowError, RecursionError):
            arr = None
        if arr is not None and arr.ndim == 1 and arr.dtype.kind in "fiu":
            if arr.dtype.kind == "f" or not any(type(v) is bool for v in values):
                return arr.astype(np.float64, copy=False)
        for k, value in enumerate(values):
            if not _is_number(value):
                name = self._feature(k % width, order)
                kind = "null" if value is None else "dtype"
                raise InputError(kind, f"feature {name!r} (row {k // width}) must be a number, got {_describe(value)}", field=name)
        out = np.empty(len(values), dtype=np.float64)
        for k, value in enumerate(values):
            try:
                out[k] = float(value)
            except (OverflowError, ValueError, TypeError):
                name = self._feature(k % width, order)
                raise InputError("range", f"feature {name!r} (row {k // width}) is {_describe(value)}, beyond float64", field=name) from None
        return out

    def _finish(self, arr: np.ndarray, order: list[int] | None) -> np.ndarray:
        """Reorder to schema order, impute nulls, check NaN/inf, integrality and ranges."""
        if order is not None:
            ordered = np.empty_like(arr)
            ordered[:, order] = arr
            arr = ordered
        finite = np.isfinite(arr)
        if not finite.all():
            i, j = np.argwhere(~finite)[0]
            raise InputError("nan", f"feature {self.names[j]!r} (row {i}) is {arr[i, j]}: NaN and infinity are not accepted", field=self.names[j])
        if self.has_int:
            ints = arr[:, self.int_columns]
            bad = ints != np.floor(ints)
            if bad.any():
                i, k = np.argwhere(bad)[0]
                j = int(np.flatnonzero(self.int_columns)[k])
                raise InputError("dtype", f"feature {self.names[j]!r} (row {i}) must be an integer, got {arr[i, j]}", field=self.names[j])
        outside = (arr < self.low) | (arr > self.high)
        if outside.any():
            i, j = np.argwhere(outside)[0]
            value = arr[i, j]
            bound = f"below the minimum {self.low[j]:g}" if value < self.low[j] else f"above the maximum {self.high[j]:g}"
            raise InputError("range", f"feature {self.names[j]!r} (row {i}) is {value:g}, {bound}", field=self.names[j])
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():  # finite float64 that overflows float32 (unbounded feature)
            i, j = np.argwhere(~np.isfinite(out))[0]
            raise InputError("range", f"feature {self.names[j]!r} (row {i}) is {arr[i, j]:g}, beyond float32", field=self.names[j])
        return out


def impute_values(profile: Mapping[str, Any] | None, schema: FeatureSchema) -> dict[str, float]:
    """Median of each nullable feature from a reference profile (for nulls)."""
    if not profile:
        return {}
    out = {}
    for feature in schema.features:
        if feature.nullable:
            entry = profile.get("features", {}).get(feature.name, {})
            median = entry.get("quantiles", {}).get("0.5")
            if median is not None and math.isfinite(float(median)):
                out[feature.name] = float(median)
    return out
