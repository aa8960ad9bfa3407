"""`strata plan --stack enterprise` speed: wall time, resources/s, growth with 1/5/20 models.

Ratios are against the 1-model plan and against Pulumi's floor, both measured in the same
run: the floor registers as many bare ConfigMaps (one data key each) under the same mocks,
so it is what any program of that many resources pays the SDK here, and the ratio stays
readable when this machine's speed drifts. Target (README): the 20-model enterprise plan
evaluates in under 5 s here, and time grows linearly.
"""

import statistics
import time

from infra.plan.harness import evaluate_under_mocks, run_program
from tests.conftest import stack_config_with_models

MODEL_COUNTS = (1, 5, 20)


def _timed(count: int, repeats: int = 3) -> tuple[float, int]:
    config = stack_config_with_models("enterprise", count)
    seconds, resources = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        plan = run_program("enterprise", config)
        seconds.append(time.perf_counter() - started)
        resources = len(plan.resources)
    return statistics.median(seconds), resources


def _pulumi_floor(resources: int, repeats: int = 3) -> float:
    import pulumi_kubernetes as k8s

    def program():
        for index in range(resources):
            k8s.core.v1.ConfigMap(f"floor-{index}", metadata={"name": f"floor-{index}", "namespace": "default"},
                                  data={"key": "value"})

    seconds = [evaluate_under_mocks(program, "floor", {}, [], "us-east-1")[1] for _ in range(repeats)]
    return statistics.median(seconds)


def test_enterprise_plan_scales_linearly_with_models(benchmark):
    run_program("enterprise", stack_config_with_models("enterprise", 1))  # imports + warm-up
    measured = {count: _timed(count) for count in MODEL_COUNTS}
    config = stack_config_with_models("enterprise", 20)
    plan = benchmark.pedantic(run_program, args=("enterprise", config), rounds=3, iterations=1)

    base_seconds, base_resources = measured[1]
    print("\nenterprise plan under mocks (median of 3, same run):")
    print(f"{'models':>7} {'resources':>10} {'seconds':>8} {'res/s':>8} {'x 1-model':>10}")
    for count, (seconds, resources) in measured.items():
        print(f"{count:>7} {resources:>10} {seconds:>8.3f} {resources / seconds:>8.0f} {seconds / base_seconds:>10.2f}")
    per_model_small = (measured[5][0] - base_seconds) / 4
    per_model_large = (measured[20][0] - measured[5][0]) / 15
    print(f"marginal s/model: 1->5 {per_model_small:.4f}, 5->20 {per_model_large:.4f} (linear when these agree)")
    floor = _pulumi_floor(measured[20][1])
    print(f"20 models: {measured[20][0]:.2f} s (target < 5 s); Pulumi's floor for {measured[20][1]} bare "
          f"ConfigMaps in this run: {floor:.2f} s, so the plan costs {measured[20][0] / floor:.2f}x the floor")
    benchmark.extra_info.update(
        {f"seconds_{c}_models": round(s, 4) for c, (s, _) in measured.items()}
        | {"resources_20_models": measured[20][1], "marginal_seconds_per_model": round(per_model_large, 5),
           "pulumi_floor_seconds": round(floor, 4), "x_pulumi_floor": round(measured[20][0] / floor, 3)}
    )
    assert len(plan.resources) == measured[20][1]
    assert measured[20][1] > measured[5][1] > measured[1][1]
