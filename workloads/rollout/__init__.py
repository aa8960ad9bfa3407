"""The rollout controller: metric-gated canary, shadow, A/B and blue-green rollouts.

One implementation runs locally (`strata promote MODEL`, the local proxy, state in the
registry export) and on the cluster (`python -m workloads.rollout --model M --cluster`,
the SeldonDeployment, state in a ConfigMap). Modules:

- `state`: the persisted per-model state machine record and its file store;
- `stats`: pure statistics (two-proportion tests, PSI between histograms, verdicts);
- `analysis`: Prometheus HTTP API queries built by `workloads.monitoring.queries`;
- `record`: every decision to decisions.jsonl, the log, MLflow tags, Events, metrics;
- `controller`: the state machine;
- `kube`: the cluster router, ConfigMap store and Event sink (kubernetes client);
- `cli`: `strata promote`, `strata rollout-status`; `__main__`: the service.
"""
