"""The drift feed of one model: its scored stream -> the drift monitor's live window.

    python -m workloads.local.drift_feed --bootstrap 127.0.0.1:19092 --topic strata.fraud.scored \
        --model fraud --monitor http://127.0.0.1:19300 --heartbeat <state>/data/fraud-drift-feed/heartbeat

The stream worker writes every scored record with its input features; this consumer
posts them in batches to the drift monitor's `POST /v1/observe` (feature order = the
champion's feature schema, predictions = P(positive) or the top-class probability), and
commits the topic offsets only after the monitor accepted the batch (at least once: a
replayed batch only weighs a little more in the window). It touches `--heartbeat` every
second, which is its supervisor health check (it has no port of its own).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("strata.drift_feed")


def feature_order(model: str, registry_dir: str | None) -> list[str]:
    """The champion's feature names, in schema order (the drift profile's column order)."""
    from workloads.serving import registry

    root = Path(registry_dir) if registry_dir else registry.default_root()
    version = registry.resolve(root, model, alias="champion")
    schema = json.loads(version.schema_path.read_text())
    return [f["name"] for f in schema["features"]]


def row_of(record: dict[str, Any], names: list[str]) -> tuple[list[float], float | None] | None:
    """(feature row, prediction) of one scored record; None when it has no usable features."""
    features = record.get("features")
    if not isinstance(features, dict):
        return None
    try:
        row = [float(features[name]) for name in names]
    except (KeyError, TypeError, ValueError):
        return None
    scores = record.get("scores") or {}
    prediction = None
    if isinstance(scores, dict) and scores:
        values = [v for v in scores.values() if isinstance(v, (int, float))]
        if "proba_1" in scores and len(scores) == 2:
            prediction = float(scores["proba_1"])
        elif values:
            prediction = float(max(values))
    return row, prediction


def post(url: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def run(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer

    stop = {"now": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.update(now=True))
    heartbeat = Path(args.heartbeat)
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    names = feature_order(args.model, args.registry)
    consumer = KafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group or f"strata-drift-feed-{args.model}",
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=args.batch,
        value_deserializer=lambda raw: raw,
    )
    observe = args.monitor.rstrip("/") + "/v1/observe"
    print(f"drift feed: {args.topic} -> {observe} ({len(names)} features)", flush=True)
    last_beat = 0.0
    try:
        while not stop["now"]:
            now = time.time()
            if now - last_beat >= 1.0:
                heartbeat.touch()
                last_beat = now
            polled = consumer.poll(timeout_ms=500, max_records=args.batch)
            rows, predictions = [], []
            for records in polled.values():
                for record in records:
                    try:
                        parsed = row_of(json.loads(record.value), names)
                    except ValueError:
                        parsed = None
                    if parsed is None:
                        continue
                    rows.append(parsed[0])
                    predictions.append(parsed[1])
            if rows:
                body: dict[str, Any] = {"rows": rows, "stage": "streaming"}
                if all(p is not None for p in predictions):
                    body["predictions"] = predictions
                try:
                    post(observe, body)
                except urllib.error.HTTPError as error:
                    if error.code >= 500:
                        raise
                    # Refused (4xx): the batch can never be accepted; say so and move on.
                    log.warning("drift monitor refused %d rows: %s %s", len(rows), error.code, error.read()[:200])
                except (urllib.error.URLError, OSError) as error:
                    # The monitor is down or restarting: replay this batch later.
                    log.warning("drift monitor %s: %s; retrying", observe, error)
                    for partition, records in polled.items():
                        consumer.seek(partition, records[0].offset)
                    time.sleep(1.0)
                    continue
            if polled:
                consumer.commit()
    finally:
        consumer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--monitor", required=True, help="drift monitor base URL")
    parser.add_argument("--heartbeat", required=True, help="file touched every second (health)")
    parser.add_argument("--registry", default="", help="registry export root (default $STRATA_REGISTRY_DIR)")
    parser.add_argument("--group", default="")
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
