"""Re-submit a model's training: create a timestamped copy of its RayJob template.

The retraining `CronJob` of `infra.models.training` runs this in the training image, and
the retraining trigger (an Alertmanager webhook) in the monitoring image:

    python -m workloads.training.submit --template /etc/strata/training/rayjob.json
    python -m workloads.training.submit --template /etc/strata/retrain-jobs/fraud.json --template-namespace --trigger retrain

It reads the RayJob manifest the platform rendered (a ConfigMap), names the copy
`<model>-<UTC yymmddHHMM>` and POSTs it to the Kubernetes API with the pod's service
account (which may only create/get `rayjobs.ray.io` in its own namespace), then reads
it back. Only the standard library: the in-cluster token, CA bundle and namespace files,
`KUBERNETES_SERVICE_HOST`/`_PORT`, and urllib. No kubectl, no client library.

Exit codes: 0 created, 1 not created (an invalid template or the API refused it; the message
says why), 2 the template file cannot be read or parsed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API_PATH = "/apis/ray.io/v1/namespaces/{namespace}/rayjobs"
MAX_NAME_LENGTH = 47  # KubeRay's limit for a RayJob name (the RayCluster adds a suffix)
STAMP_FORMAT = "%y%m%d%H%M"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class SubmitError(RuntimeError):
    pass


def job_name(base: str, now: dt.datetime) -> str:
    """`<base>-<yymmddHHMM>`, `base` trimmed so the whole fits KubeRay's limit."""
    stamp = now.astimezone(dt.timezone.utc).strftime(STAMP_FORMAT)
    base = base[: MAX_NAME_LENGTH - len(stamp) - 1].rstrip("-")
    name = f"{base}-{stamp}"
    if not _DNS_LABEL.match(name):
        raise SubmitError(f"cannot derive a valid RayJob name from {base!r}")
    return name


TRIGGERS = ("schedule", "retrain")  # the CronJob; the retraining trigger (an Alertmanager webhook)


def scheduled_copy(template: Mapping[str, Any], now: dt.datetime, namespace: str | None = None,
                   trigger: str = "schedule") -> dict[str, Any]:
    """The object to create: the template's spec, fresh metadata with a timestamped name."""
    if template.get("apiVersion") != "ray.io/v1" or template.get("kind") != "RayJob":
        raise SubmitError(f"template is not a ray.io/v1 RayJob: {template.get('apiVersion')}/{template.get('kind')}")
    if not isinstance(template.get("spec"), dict):
        raise SubmitError("template has no spec")
    meta = template.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    base = labels.get("strata.dev/model") or str(meta.get("name") or "")
    if not base:
        raise SubmitError("template has neither a strata.dev/model label nor a name")
    if trigger not in TRIGGERS:
        raise SubmitError(f"trigger {trigger!r}: one of {', '.join(TRIGGERS)}")
    labels["strata.dev/trigger"] = trigger
    if trigger != "schedule":
        base = f"{base}-{trigger}"  # never the same name as a scheduled run of the same minute
    spec = json.loads(json.dumps(template["spec"]))  # a deep copy
    metadata = dict(spec.get("metadata") or {})
    metadata["trigger"] = trigger
    spec["metadata"] = metadata
    if isinstance(spec.get("entrypoint"), str) and "workloads.training.cli" in spec["entrypoint"]:
        spec["entrypoint"] += f" --trigger {trigger}"  # the run's strata.trigger tag (training metrics)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": job_name(base, now),
            "namespace": namespace or meta.get("namespace"),
            "labels": labels,
            "annotations": {"strata.dev/scheduled-at": now.astimezone(dt.timezone.utc).isoformat(timespec="seconds")},
        },
        "spec": spec,
    }


class InClusterApi:
    """The Kubernetes API as seen from a pod (service account token + cluster CA)."""

    def __init__(self, sa_dir: Path = SERVICE_ACCOUNT_DIR, base_url: str | None = None, timeout: float = 30.0):
        if base_url is None:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise SubmitError("KUBERNETES_SERVICE_HOST is not set: not running in a pod")
            host = f"[{host}]" if ":" in host else host  # IPv6
            base_url = f"https://{host}:{port}"
        self.base_url = base_url.rstrip("/")
        self.sa_dir = sa_dir
        self.timeout = timeout
        ca = sa_dir / "ca.crt"
        self.context = ssl.create_default_context(cafile=str(ca)) if ca.is_file() else ssl.create_default_context()

    @property
    def namespace(self) -> str:
        return (self.sa_dir / "namespace").read_text().strip()

    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        token = (self.sa_dir / "token").read_text().strip()  # re-read: projected tokens rotate
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/json", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except (ValueError, AttributeError):
                pass
            raise SubmitError(f"{method} {path}: HTTP {error.code}: {detail}") from None
        except urllib.error.URLError as error:
            raise SubmitError(f"{method} {path}: {error.reason}") from None


def submit(template: Mapping[str, Any], api: InClusterApi, now: dt.datetime | None = None,
           namespace: str | None = None, trigger: str = "schedule") -> dict[str, Any]:
    """Create the timestamped copy in `namespace` (default: the pod's); return it as the API server has it."""
    namespace = namespace or api.namespace
    body = scheduled_copy(template, now or dt.datetime.now(dt.timezone.utc), namespace, trigger)
    path = API_PATH.format(namespace=namespace)
    api.request("POST", path, body)
    return api.request("GET", f"{path}/{body['metadata']['name']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.training.submit", description=__doc__.split("\n")[0])
    parser.add_argument("--template", required=True, help="the RayJob manifest (JSON) to copy")
    parser.add_argument("--template-namespace", action="store_true",
                        help="create it in the template's metadata.namespace (the retraining trigger, which "
                             "runs in the monitoring namespace), not the pod's own")
    parser.add_argument("--trigger", choices=TRIGGERS, default="schedule", help="recorded as strata.dev/trigger")
    options = parser.parse_args(argv)
    try:
        template = json.loads(Path(options.template).read_text())
    except (OSError, ValueError) as error:
        print(f"cannot read the template {options.template}: {error}", file=sys.stderr)
        return 2
    namespace = None
    if options.template_namespace:
        namespace = (template.get("metadata") or {}).get("namespace") if isinstance(template, dict) else None
        if not namespace:
            print(f"--template-namespace: {options.template} has no metadata.namespace", file=sys.stderr)
            return 2
    try:
        created = submit(template, InClusterApi(), namespace=namespace, trigger=options.trigger)
    except SubmitError as error:
        print(f"training not submitted: {error}", file=sys.stderr)
        return 1
    meta = created.get("metadata", {})
    print(json.dumps({"created": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
