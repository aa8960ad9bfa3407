"""The fraud example's source system: card transactions written into PostgreSQL, chargebacks later.

A transaction is inserted with `is_fraud = 0` (no chargeback yet); the chargeback labels of
fraudulent ones arrive later as updates (`is_fraud = 1`), as a card issuer's do. The rows
come from the seeded synthetic generator (workloads/data/synthetic.py), so a run is
reproducible; `corrupt` sends invalid values the contract quarantines.

    python -m workloads.data.ingest.fraud_source --dsn postgresql://... --rows 10000 --rate 1000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from workloads.data.synthetic import FRAUD_NAMES, FraudConfig, generate_fraud

TABLE = "card_transactions"
KEY = "txn_id"


def create_table(conn) -> None:
    columns = ", ".join(f'"{name}" double precision' for name in FRAUD_NAMES)  # quoted: `foreign` is reserved
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({KEY} text PRIMARY KEY, {columns}, "
                 "is_fraud smallint NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now())")
    conn.execute(f"ALTER TABLE {TABLE} REPLICA IDENTITY DEFAULT")


@dataclass
class FraudSource:
    """Writes transactions (and later their chargebacks) at a target rate, in small transactions."""

    dsn: str
    seed: int = 0
    corrupt: float = 0.0
    start: int = 0  # first txn number (ids are tx<number>)

    def write(self, rows: int, rate: float | None = None, batch: int = 50) -> dict[str, int]:
        """Insert `rows` transactions (0 labels), then their chargebacks; returns counts."""
        import psycopg

        x, y = generate_fraud(FraudConfig(rows=rows, seed=self.seed, corrupt=self.corrupt))
        ids = [f"tx{self.start + i:09d}" for i in range(rows)]
        cols = ", ".join(f'"{c}"' for c in (KEY, *FRAUD_NAMES))
        marks = ", ".join(["%s"] * (len(FRAUD_NAMES) + 1))
        inserted = 0
        t0 = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=False) as conn:
            create_table(conn)
            conn.commit()
            with conn.cursor() as cur:
                for lo in range(0, rows, batch):
                    hi = min(rows, lo + batch)
                    values = [(ids[i], *[None if np.isnan(v) else float(v) for v in x[i]]) for i in range(lo, hi)]
                    cur.executemany(f"INSERT INTO {TABLE} ({cols}) VALUES ({marks}) ON CONFLICT ({KEY}) DO NOTHING",
                                    values)
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
    args = ap.parse_args(argv)
    print(FraudSource(args.dsn, args.seed, args.corrupt, args.start).write(args.rows, args.rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
