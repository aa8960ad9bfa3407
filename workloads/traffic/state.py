"""The local proxy's files in the state directory: where each predictor listens, and the split in force.

Stdlib + pydantic only (the rollout controller and the serving side import it)::

    <state>/config/proxy/upstreams.json   {"models": {"fraud": {"stable": "127.0.0.1:19100",
                                                                "candidate": "127.0.0.1:19101"}},
                                           "grpc": {"fraud": {"stable": "127.0.0.1:19102"}}}
    <state>/data/proxy/splits.json        {"fraud": {"model": "fraud", "candidate_weight": 20, "shadow": false}}

``upstreams.json`` is written by whoever starts a model server (``register_upstream``);
``splits.json`` by the router when a split is applied, so a restarted proxy comes back
with the split that was in force. Both are rewritten whole with ``os.replace`` under a
lock file, so concurrent writers never lose each other's entries and a reader never sees
half a file.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from workloads.local.errors import LocalError
from workloads.local.ports import HOST
from workloads.traffic.split import PREDICTORS, TrafficSplit

# The model spec's name pattern (DNS-1123 label): no '_', so '-' -> '_' is a safe nginx identifier.
MODEL_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$")
SERVICE = "proxy"
REST_KEY = "models"
GRPC_KEY = "grpc"  # upstreams.json: model -> predictor -> gRPC host:port, beside "models" (REST)


class TrafficError(LocalError):
    """A rollout/rollback request that cannot be carried out; the message says why and what to do."""


class UnknownModelError(TrafficError):
    def __init__(self, model: str, known: list[str], upstreams_file: Path):
        self.model = model
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"unknown model {model!r}: no model server is registered with the proxy under that name "
            f"(registered: {listed}).\n  Fix: start its servers and register them "
            f"(`strata upstream {model} --stable-port N [--candidate-port M]`), which writes {upstreams_file}."
        )


class NoCandidateError(TrafficError):
    def __init__(self, model: str, split: TrafficSplit):
        super().__init__(
            f"model {model!r} has no 'candidate' (challenger) model server registered, so the split "
            f"'{split.describe()}' has nowhere to send candidate traffic.\n  Fix: serve the challenger "
            f"(`strata serve {model} --alias challenger --port M`) and register it "
            f"(`strata upstream {model} --candidate-port M`)."
        )


def check_model_name(model: str) -> str:
    if not MODEL_NAME.match(model or ""):
        raise TrafficError(f"model name {model!r} is not a model spec name (lower-case DNS label, e.g. 'fraud')")
    return model


def proxy_config_dir(state_dir: Path | str) -> Path:
    return Path(state_dir) / "config" / SERVICE


def proxy_data_dir(state_dir: Path | str) -> Path:
    return Path(state_dir) / "data" / SERVICE


def upstreams_file(state_dir: Path | str) -> Path:
    return proxy_config_dir(state_dir) / "upstreams.json"


def splits_file(state_dir: Path | str) -> Path:
    return proxy_data_dir(state_dir) / "splits.json"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` (serialises writers across processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise TrafficError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(data, dict):
        raise TrafficError(f"{path} must hold a JSON object")
    return data


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --- upstreams: where each predictor of each model listens ---------------------------------------
def read_upstreams(state_dir: Path | str) -> dict[str, dict[str, str]]:
    """``{model: {"stable": "host:port", "candidate": "host:port"}}`` (candidate optional)."""
    return _read_addresses(state_dir, REST_KEY)


def _read_addresses(state_dir: Path | str, key: str) -> dict[str, dict[str, str]]:
    """One section of upstreams.json (REST or gRPC), every name and address checked."""
    path = upstreams_file(state_dir)
    models = _read_json(path).get(key, {})
    if not isinstance(models, dict):
        raise TrafficError(f"{path}: '{key}' must be an object of model -> {{predictor: host:port}}")
    for model, slots in models.items():
        check_model_name(model)
        if not isinstance(slots, dict) or set(slots) - set(PREDICTORS):
            raise TrafficError(f"{path}: {key}.{model} must map {' and/or '.join(PREDICTORS)} to host:port")
        for predictor, address in slots.items():
            _split_address(address, f"{path}: {key}.{model}.{predictor}")
    return models


def _split_address(address: object, where: str) -> tuple[str, int]:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise TrafficError(f"{where}: {address!r} is not host:port")
    return host, int(port)


def read_grpc_upstreams(state_dir: Path | str) -> dict[str, dict[str, str]]:
    """``{model: {"stable": "host:port", ...}}``: where the predictors serve gRPC (optional per predictor)."""
    return _read_addresses(state_dir, GRPC_KEY)


def register_upstream(
    state_dir: Path | str, model: str, predictor: str, port: int, host: str = HOST, grpc_port: int | None = None,
) -> dict[str, str]:
    """Record that ``model``'s ``predictor`` (stable|candidate) serves REST on ``host:port``
    (and gRPC on ``host:grpc_port``).

    Returns the model's REST entry. The proxy picks it up at its next (re)load:
    ``LocalProxyRouter(state_dir).refresh()`` or any ``apply``.
    """
    check_model_name(model)
    if predictor not in PREDICTORS:
        raise TrafficError(f"predictor {predictor!r}: expected one of {', '.join(PREDICTORS)}")
    address = f"{host}:{int(port)}"
    _split_address(address, f"{model}.{predictor}")
    grpc_address = None if grpc_port is None else f"{host}:{int(grpc_port)}"
    if grpc_address is not None:
        _split_address(grpc_address, f"{model}.{predictor} (gRPC)")
    path = upstreams_file(state_dir)
    with locked(path):
        data = _read_json(path)
        models = data.setdefault(REST_KEY, {})
        models.setdefault(model, {})[predictor] = address
        grpc = data.setdefault(GRPC_KEY, {})
        if grpc_address is None:  # re-registered without gRPC: never route to a stale port
            grpc.get(model, {}).pop(predictor, None)
        else:
            grpc.setdefault(model, {})[predictor] = grpc_address
        if model in grpc and not grpc[model]:
            grpc.pop(model)
        _write_json(path, data)
        return dict(models[model])


def unregister_upstream(state_dir: Path | str, model: str, predictor: str | None = None) -> None:
    """Forget one predictor of ``model`` (or the whole model when ``predictor`` is None)."""
    path = upstreams_file(state_dir)
    with locked(path):
        data = _read_json(path)
        for key in (REST_KEY, GRPC_KEY):
            models = data.setdefault(key, {})
            if predictor is None:
                models.pop(model, None)
            else:
                models.get(model, {}).pop(predictor, None)
                if not models.get(model):
                    models.pop(model, None)
        _write_json(path, data)


# --- splits: the split in force per model ------------------------------------------------------
def read_splits(state_dir: Path | str) -> dict[str, TrafficSplit]:
    path = splits_file(state_dir)
    out: dict[str, TrafficSplit] = {}
    for model, raw in _read_json(path).items():
        try:
            out[model] = TrafficSplit.model_validate(raw)
        except ValueError as exc:
            raise TrafficError(f"{path}: {model}: {exc}") from None
    return out


def write_splits(state_dir: Path | str, splits: dict[str, TrafficSplit]) -> None:
    _write_json(splits_file(state_dir), {m: s.model_dump() for m, s in sorted(splits.items())})
