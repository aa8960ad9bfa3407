"""The cluster router's pure part: SeldonDeployment predictors <-> TrafficSplit."""

from __future__ import annotations

import pytest

from workloads.rollout.analysis import metrics_predictor
from workloads.rollout.controller import RolloutError
from workloads.rollout.kube import predictors_for, split_from_predictors
from workloads.traffic.split import TrafficSplit

PREDICTORS = [
    {"name": "stable", "traffic": 100, "replicas": 2, "graph": {"name": "model", "parameters": [{"name": "alias", "value": "champion"}]}},
    {"name": "candidate", "traffic": 0, "replicas": 1, "graph": {"name": "model"}},
]


@pytest.mark.parametrize("split", [TrafficSplit.weighted("fraud", 25), TrafficSplit.mirrored("fraud"),
                                   TrafficSplit.all_candidate("fraud"), TrafficSplit.all_stable("fraud")])
def test_every_split_round_trips_and_keeps_the_other_fields(split):
    predictors = predictors_for(split, PREDICTORS)
    assert split_from_predictors("fraud", predictors) == split
    assert [p["replicas"] for p in predictors] == [2, 1] and predictors[0]["graph"] == PREDICTORS[0]["graph"]
    assert sum(p["traffic"] for p in predictors) == 100


def test_a_split_needs_the_candidate_predictor():
    with pytest.raises(RolloutError, match="no `candidate` predictor"):
        predictors_for(TrafficSplit.weighted("fraud", 5), PREDICTORS[:1])
    assert predictors_for(TrafficSplit.all_stable("fraud"), PREDICTORS[:1])[0]["traffic"] == 100


def test_the_shadow_candidate_is_labelled_shadow():
    assert metrics_predictor("candidate", "shadow") == "shadow"
    assert metrics_predictor("candidate", "canary") == "candidate"
    assert metrics_predictor("stable", "shadow") == "stable"
