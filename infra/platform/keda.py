"""`Keda`: the KEDA operator, metrics API server and admission webhooks (event-driven autoscaling)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from infra.k8s import resources
from infra.platform.charts import helm_release


@dataclass(frozen=True)
class KedaArgs:
    """Defaults: one replica of each KEDA deployment, no ServiceMonitors."""

    namespace: str
    ha: bool = False  # two replicas of operator, metrics server and webhooks, with PDBs
    service_monitors: bool = False  # needs the prometheus-operator CRDs (pass that release in `after`)


class Keda(pulumi.ComponentResource):
    def __init__(self, name: str, args: KedaArgs, after: Sequence[pulumi.Resource] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:platform:Keda", name, None, opts)
        replicas = 2 if args.ha else 1
        pdb = {"maxUnavailable": 1} if args.ha else {}
        monitor = {"enabled": args.service_monitors, "serviceMonitor": {"enabled": args.service_monitors}}
        self.release = helm_release(f"{name}-release", "keda", namespace=args.namespace,
                                    opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)), values={
            "operator": {"replicaCount": replicas},
            "metricsServer": {"replicaCount": replicas},
            "webhooks": {"replicaCount": replicas},
            "podDisruptionBudget": {"operator": pdb, "metricServer": pdb, "webhooks": pdb},
            # The chart's defaults are already restricted-compliant (runAsNonRoot, drop ALL,
            # read-only root, seccomp RuntimeDefault); requests/limits are stated here.
            "resources": {
                "operator": resources("100m", "128Mi", "1", "1Gi"),
                "metricServer": resources("100m", "128Mi", "1", "1Gi"),
                "webhooks": resources("50m", "64Mi", "500m", "512Mi"),
            },
            "prometheus": {"operator": monitor, "metricServer": monitor, "webhooks": monitor},
        })
        self.register_outputs({"release": self.release.status})
