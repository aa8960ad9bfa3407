"""The workload catalogue: each workload declared once, rendered twice.

`declarations` holds the catalogue, `model` its typed shape, `substitution` the one
placeholder mechanism both renderers share. The local renderer is
`workloads.local.catalogue`, the cluster renderer `infra.workloads`; neither imports the
other, and this package imports neither.
"""

from workloads.catalogue.declarations import CatalogueOptions, catalogue, model_workloads, platform_workloads
from workloads.catalogue.model import Workload
from workloads.catalogue.substitution import SubstitutionError, render_argv, substitute

__all__ = ["CatalogueOptions", "SubstitutionError", "Workload", "catalogue", "model_workloads",
           "platform_workloads", "render_argv", "substitute"]
