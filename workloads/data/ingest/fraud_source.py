"""The fraud example's source system: card transactions written into PostgreSQL, chargebacks later.

A transaction is inserted with `is_fraud = 0` (no chargeback yet); the chargeback labels of
fraudulent ones arrive later as updates (`is_fraud = 1`), as a card issuer's do. The rows
come from the seeded synthetic generator (workloads/data/synthetic.py), so a run is
reproducible; `corrupt` sends invalid values the contract quarantines. Each transaction has
its card (`card_id`, the feature store's entity key) and its event time (`event_ts`, when
the card was used: the wall clock at insert), which the streaming aggregates
(workloads/data/features/streaming.py) roll up per card.

    python -m workloads.data.ingest.fraud_source --dsn postgresql://... --rows 10000 --rate 1000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from workloads.data.synthetic import FRAUD_NAMES, FraudConfig, fraud_card_ids, generate_fraud

TABLE = "card_transactions"
KEY = "txn_id"
ENTITY, EVENT_TIME = "card_id", "event_ts"  # the streaming features' entity key and event time


def create_table(conn) -> None:
    columns = ", ".join(f'"{name}" double precision' for name in FRAUD_NAMES)  # quoted: `foreign` is reserved
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({KEY} text PRIMARY KEY, {columns}, "
                 "is_fraud smallint NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now(), "
                 f"{ENTITY} text, {EVENT_TIME} timestamptz)")
    # a table created before the columns existed (a kept local state) gets them
    conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {ENTITY} text, "
                 f"ADD COLUMN IF NOT EXISTS {EVENT_TIME} timestamptz")
    conn.execute(f"ALTER TABLE {TABLE} REPLICA IDENTITY DEFAULT")


@dataclass
class FraudSource:
    """Writes transactions (and later their chargebacks) at a target rate, in small transactions."""

    dsn: str
    seed: int = 0
    corrupt: float = 0.0
    start: int = 0  # first txn number (ids are tx<number>)
    cards: int = 1_000  # distinct cards the transactions are drawn from

    def write(self, rows: int, rate: float | None = None, batch: int = 50) -> dict[str, int]:
        """Insert `rows` transactions (0 labels), then their chargebacks; returns counts."""
        import psycopg

        x, y = generate_fraud(FraudConfig(rows=rows, seed=self.seed, corrupt=self.corrupt))
        ids = [f"tx{self.start + i:09d}" for i in range(rows)]
        cards = fraud_card_ids(rows, self.seed, self.cards)
        cols = ", ".join(f'"{c}"' for c in (KEY, ENTITY, *FRAUD_NAMES))
        marks = ", ".join(["%s"] * (len(FRAUD_NAMES) + 2))
        inserted = 0
        t0 = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=False) as conn:
            create_table(conn)
            conn.commit()
            with conn.cursor() as cur:
                for lo in range(0, rows, batch):
                    hi = min(rows, lo + batch)
                    values = [(ids[i], cards[i], *[None if np.isnan(v) else float(v) for v in x[i]])
                              for i in range(lo, hi)]
                    cur.executemany(f"INSERT INTO {TABLE} ({cols}, {EVENT_TIME}) VALUES ({marks}, clock_timestamp()) "
                                    f"ON CONFLICT ({KEY}) DO NOTHING", values)
                    conn.commit()
                    inserted += hi - lo
                    if rate:  # pace to the target rate (changes/s)
                        ahead = inserted / rate - (time.perf_counter() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
            fraud = [ids[i] for i in np.flatnonzero(y == 1)]
            with conn.cursor() as cur:  # the chargebacks, later
                for lo in range(0, len(fraud), batch):
                    cur.execute(f"UPDATE {TABLE} SET is_fraud = 1 WHERE {KEY} = ANY(%s)", (fraud[lo:lo + batch],))
                    conn.commit()
        return {"inserted": inserted, "chargebacks": len(fraud)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=None, help="inserts per second (default: as fast as possible)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--corrupt", type=float, default=0.0)
    ap.add_argument("--cards", type=int, default=1_000, help="distinct cards")
    args = ap.parse_args(argv)
    print(FraudSource(args.dsn, args.seed, args.corrupt, args.start, args.cards).write(args.rows, args.rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
