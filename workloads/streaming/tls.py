"""Kafka client transport options: mutual TLS (the cluster's Strimzi listener) or PLAINTEXT.

One function for every Kafka client of ours (stream worker, quality service): the three
files all set (and present) mean mutual TLS, none means PLAINTEXT (the local broker on
loopback), anything in between is a clear error. The files default from
`STRATA_KAFKA_SSL_CAFILE`, `..._CERTFILE`, `..._KEYFILE` (how the catalogue passes them).
"""

from __future__ import annotations

import os
from typing import Any

ENV = {"ssl_cafile": "STRATA_KAFKA_SSL_CAFILE", "ssl_certfile": "STRATA_KAFKA_SSL_CERTFILE",
       "ssl_keyfile": "STRATA_KAFKA_SSL_KEYFILE"}


def add_arguments(parser: Any) -> None:
    for key, env in ENV.items():
        parser.add_argument(f"--{key.replace('_', '-')}", default=os.environ.get(env, ""),
                            help=f"mutual TLS to Kafka (default ${env}; all three or none)")


def security_options(ssl_cafile: str = "", ssl_certfile: str = "", ssl_keyfile: str = "") -> dict[str, Any]:
    """kafka-python client options for the configured transport."""
    given = {"ssl_cafile": ssl_cafile, "ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
    if not any(given.values()):
        return {"security_protocol": "PLAINTEXT"}
    missing = [f"--{k.replace('_', '-')}" for k, v in given.items() if not v]
    if missing:
        raise ValueError(f"mutual TLS needs --ssl-cafile, --ssl-certfile and --ssl-keyfile; missing {', '.join(missing)}")
    absent = [f"{k.replace('_', '-')} {v}" for k, v in given.items() if not os.path.isfile(v)]
    if absent:
        raise ValueError(f"TLS file(s) not found: {'; '.join(absent)}")
    return {"security_protocol": "SSL", "ssl_check_hostname": True, **given}
