"""Debezium change events of card transactions for the streaming-aggregate tests, and the
brute-force oracle the pushed aggregates are compared with.

The events include what CDC delivers in practice: inserts whose event times arrive out of
order (up to 30 h late), chargeback updates (same amount and time), corrections (a new
amount, time or card), deletes, Debezium replays (the same change, same LSN, delivered
again) and older versions delivered after newer ones.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from workloads.data.features.streaming import Aggregation, event_time_us
from workloads.data.ingest.cdc import parse


@dataclass(frozen=True)
class Event:
    value: bytes  # the Debezium envelope, as Kafka carries it
    txn_id: str

    @property
    def change(self):
        return parse(self.value, "txn_id")


def envelope(op: str, row: dict[str, Any], lsn: int) -> bytes:
    after, before = (None, {"txn_id": row["txn_id"]}) if op == "d" else (row, None)
    return json.dumps({"before": before, "after": after, "op": op,
                       "source": {"lsn": lsn, "ts_ms": 0, "table": "card_transactions"}}).encode()


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")  # Debezium's ZonedTimestamp


def card_events(seed: int, transactions: int, cards: int, now: datetime | None = None) -> list[Event]:
    """Change events in delivery order (not LSN order, not event-time order)."""
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    lsn, events, versions = 1000, [], {}
    for i in range(transactions):
        txn = f"tx{seed}-{i:06d}"
        # mostly recent, some up to 30 h old (beyond the 24 h window of a card's later events)
        moment = now - timedelta(seconds=rng.random() * (30 * 3600 if rng.random() < 0.2 else 3 * 3600))
        row = {"txn_id": txn, "card_id": f"card{rng.randrange(cards)}", "amount": round(rng.uniform(1, 500), 2),
               "event_ts": iso(moment), "is_fraud": 0}
        lsn += rng.randint(1, 50)
        versions[txn] = [("c", dict(row), lsn)]
        events.append(Event(envelope("c", row, lsn), txn))
        roll = rng.random()
        if roll < 0.15:  # a chargeback: the same transaction, labelled
            lsn += 1
            versions[txn].append(("u", {**row, "is_fraud": 1}, lsn))
        elif roll < 0.22:  # a correction: another amount, time or card
            changed = dict(row)
            what = rng.choice(["amount", "event_ts", "card_id"])
            changed[what] = (round(rng.uniform(1, 500), 2) if what == "amount"
                             else iso(moment - timedelta(minutes=rng.randint(1, 120))) if what == "event_ts"
                             else f"card{rng.randrange(cards)}")
            lsn += 1
            versions[txn].append(("u", changed, lsn))
        elif roll < 0.26:  # deleted
            lsn += 1
            versions[txn].append(("d", row, lsn))
        for op, version, at in versions[txn][1:]:
            events.append(Event(envelope(op, version, at), txn))
    # replays: Debezium re-sends changes after a Connect restart (same LSN)
    replayed = [events[rng.randrange(len(events))] for _ in range(len(events) // 10)]
    # and some older versions arrive after their newer ones
    delivered = events + replayed
    for _ in range(len(delivered) // 20):
        a, b = rng.randrange(len(delivered)), rng.randrange(len(delivered))
        delivered[a], delivered[b] = delivered[b], delivered[a]
    return delivered


def oracle(events: list[Event], agg: Aggregation) -> dict[str, tuple[int, dict[str, float]]]:
    """card -> (T, features), by brute force over every change: T is the latest event time in
    any change of the card; each window counts the latest version (highest LSN) of each live
    transaction of the card with event time in (T - w, T]."""
    latest: dict[str, Any] = {}
    reference: dict[str, int] = {}
    for event in events:
        change = event.change
        if change.op != "d":
            card = change.row["card_id"]
            reference[card] = max(reference.get(card, -math.inf), event_time_us(change.row["event_ts"], "event_ts"))
        if event.txn_id not in latest or change.lsn > latest[event.txn_id].lsn:
            latest[event.txn_id] = change
    live = [c for c in latest.values() if c.op != "d"]
    out = {}
    for card, t in reference.items():
        features: dict[str, float] = {}
        for name, width in agg.window_us.items():
            inside = [c.row["amount"] for c in live if c.row["card_id"] == card
                      and t - width < event_time_us(c.row["event_ts"], "event_ts") <= t]
            features[f"{agg.count_name}_{name}"] = len(inside)
            features[f"{agg.value}_sum_{name}"] = math.fsum(inside)
        out[card] = (int(t), features)
    return out
