"""Schema validation of the rendered Kubernetes objects of a plan.

Every object the program renders is checked against the schema the cluster will apply
to it, offline:

- **Built-in kinds** (core, apps, batch, policy, `*.k8s.io`, ...) against the Kubernetes
  OpenAPI schema of the stack's pinned cluster version
  (`spec.config.cluster.kubernetes_version`), as shipped by the `kubernetes-validate`
  package, in its *strict* variant (an unknown field fails, as with the API server's
  `fieldValidation=Strict`).
- **Custom resources** against the `openAPIV3Schema` of the REAL CRD of the pinned
  operator version. The CRDs are not copied into this repository: `ensure_crd_schemas()`
  fetches them once from package registries into a cache (`~/.cache/strata/crds`, or
  `$STRATA_CRD_CACHE`) and the table `CRD_SOURCES` says, per (group, version, kind),
  which artifact, version and file each schema comes from. A CR whose kind is not in the
  table is an error: a new kind cannot slip through unvalidated.
- **Helm releases** (`kubernetes:helm.sh/v3:Release`) are not manifests: their `values`
  must be a mapping and their chart `version` an exact semver pin.

The CRD schemas are *structural* schemas (OpenAPI v3 with `x-kubernetes-*` extensions);
`crd_to_jsonschema()` turns one into a JSON Schema with the API server's semantics for
unknown fields: an object without `x-kubernetes-preserve-unknown-fields` admits only
its declared properties (the server would prune the rest, and reject them under strict
field validation), `x-kubernetes-int-or-string` admits an integer or a string,
`nullable` admits null. CEL rules (`x-kubernetes-validations`) are not evaluated.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import jsonschema

from infra.plan.harness import Plan, PlannedResource

GVK = tuple[str, str, str]  # (group, version, kind); group "" is the core group

DEFAULT_KUBERNETES_VERSION = "1.35"  # infra.config.DEFAULT_KUBERNETES_VERSION
HELM_RELEASE_TYPES = ("kubernetes:helm.sh/v3:Release",)
# Pulumi-kubernetes types that are not one rendered object: charts, YAML/kustomize groups
# (rendered by the provider at `pulumi up`; under mocks there is nothing to validate).
_NON_MANIFEST_MODULES = ("helm.sh/", "yaml/", "kustomize/")
_BUILTIN_PLAIN_GROUPS = frozenset({"", "apps", "batch", "policy", "autoscaling", "extensions"})
_EXACT_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


# --------------------------------------------------------------------------------------
# Where each CRD schema comes from
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrdSource:
    """One CRD schema's origin.

    source:
      - ``"go"``: a Go module from the Go module proxy (`go mod download -json
        MODULE@VERSION`); ``path`` is the CRD YAML file inside the module zip.
      - ``"maven-strimzi"``: Strimzi's CRDs are not shipped as YAML in any registry
        artifact; they are *generated* from the `io.strimzi:api` model classes of
        ``version`` by Strimzi's own CRD generator, with the exact arguments that
        Strimzi's build uses (read from the pom inside the api jar). ``path`` is the
        model class. The generator jar is `io.strimzi:crd-generator:GENERATOR`
        (`STRIMZI_CRD_GENERATOR_VERSION`, the last one published to Maven Central).
      - ``"none"``: no package registry reachable here ships this CRD; ``note`` says
        why. Such CRs are reported as unverifiable, never as valid.
    chart: the key in `infra.platform.charts.CHARTS` whose `app_version` is the operator
      version this schema must match (None where the operator is not a chart there).
    """

    source: str
    artifact: str
    version: str
    path: str
    chart: str | None = None
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.artifact}@{self.version}"


STRIMZI_CRD_GENERATOR_VERSION = "0.45.0"
_STRIMZI_MODEL = "io.strimzi.api.kafka.model"

_KUBERAY = ("github.com/ray-project/kuberay/ray-operator", "v1.6.0")
_KEDA = ("github.com/kedacore/keda/v2", "v2.20.2")
_STRIMZI = ("io.strimzi:api", "0.51.0")
_PROMETHEUS = ("github.com/prometheus-operator/prometheus-operator", "v0.93.1")
_ISTIO = ("istio.io/api", "v1.30.3")
_KARPENTER = ("github.com/aws/karpenter-provider-aws", "v1.13.0")
_SELDON = ("seldon-core-operator", "1.18.2")


def _go(module: tuple[str, str], path: str, chart: str | None, note: str = "") -> CrdSource:
    return CrdSource("go", module[0], module[1], path, chart, note)


def _strimzi(model_class: str) -> CrdSource:
    return CrdSource("maven-strimzi", _STRIMZI[0], _STRIMZI[1], f"{_STRIMZI_MODEL}.{model_class}", "strimzi")


_RAY_CRD = "config/crd/bases/ray.io_{}.yaml"
_KEDA_CRD = "config/crd/bases/keda.sh_{}.yaml"
_PROM_CRD = "example/prometheus-operator-crd/monitoring.coreos.com_{}.yaml"
_ISTIO_CRDS = "kubernetes/customresourcedefinitions.gen.yaml"
_KARPENTER_CRD = "pkg/apis/crds/{}.yaml"

# (group, version, kind) -> where its CRD schema comes from. Versions follow the operator
# versions pinned in infra/platform/charts.py (`app_version`) and infra/crds/karpenter.py.
CRD_SOURCES: Mapping[GVK, CrdSource] = {
    # KubeRay
    ("ray.io", "v1", "RayJob"): _go(_KUBERAY, _RAY_CRD.format("rayjobs"), "kuberay"),
    ("ray.io", "v1", "RayCluster"): _go(_KUBERAY, _RAY_CRD.format("rayclusters"), "kuberay"),
    ("ray.io", "v1", "RayService"): _go(_KUBERAY, _RAY_CRD.format("rayservices"), "kuberay"),
    # KEDA
    ("keda.sh", "v1alpha1", "ScaledObject"): _go(_KEDA, _KEDA_CRD.format("scaledobjects"), "keda"),
    ("keda.sh", "v1alpha1", "ScaledJob"): _go(_KEDA, _KEDA_CRD.format("scaledjobs"), "keda"),
    ("keda.sh", "v1alpha1", "TriggerAuthentication"): _go(_KEDA, _KEDA_CRD.format("triggerauthentications"), "keda"),
    ("keda.sh", "v1alpha1", "ClusterTriggerAuthentication"): _go(
        _KEDA, _KEDA_CRD.format("clustertriggerauthentications"), "keda"
    ),
    # Strimzi. 0.51 also serves v1, but the last published generator (0.45.0) renders the
    # v1 schemas differently from 0.51's shipped CRDs, so v1 is not offered here; for
    # v1beta2 its output equals the shipped CRDs (checked field by field, CEL rules aside).
    **{
        ("kafka.strimzi.io", "v1beta2", kind): _strimzi(model)
        for kind, model in (
            ("Kafka", "kafka.Kafka"),
            ("KafkaNodePool", "nodepool.KafkaNodePool"),
            ("KafkaTopic", "topic.KafkaTopic"),
            ("KafkaUser", "user.KafkaUser"),
            ("KafkaConnect", "connect.KafkaConnect"),
            ("KafkaConnector", "connector.KafkaConnector"),
        )
    },
    # prometheus-operator (kube-prometheus-stack's app_version)
    ("monitoring.coreos.com", "v1", "ServiceMonitor"): _go(
        _PROMETHEUS, _PROM_CRD.format("servicemonitors"), "kube-prometheus-stack"
    ),
    ("monitoring.coreos.com", "v1", "PodMonitor"): _go(_PROMETHEUS, _PROM_CRD.format("podmonitors"), "kube-prometheus-stack"),
    ("monitoring.coreos.com", "v1", "PrometheusRule"): _go(
        _PROMETHEUS, _PROM_CRD.format("prometheusrules"), "kube-prometheus-stack"
    ),
    ("monitoring.coreos.com", "v1", "Probe"): _go(_PROMETHEUS, _PROM_CRD.format("probes"), "kube-prometheus-stack"),
    ("monitoring.coreos.com", "v1alpha1", "AlertmanagerConfig"): _go(
        _PROMETHEUS, _PROM_CRD.format("alertmanagerconfigs"), "kube-prometheus-stack"
    ),
    # Istio (all of Istio's CRDs are in one generated file of istio.io/api)
    **{
        (group, version, kind): _go(_ISTIO, _ISTIO_CRDS, "istio-base")
        for group, versions, kinds in (
            ("security.istio.io", ("v1", "v1beta1"), ("PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication")),
            (
                "networking.istio.io",
                ("v1", "v1beta1"),
                ("VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Sidecar"),
            ),
            ("telemetry.istio.io", ("v1",), ("Telemetry",)),
        )
        for version in versions
        for kind in kinds
    },
    # Karpenter (cluster layer; version = infra.crds.karpenter.KARPENTER_VERSION)
    ("karpenter.sh", "v1", "NodePool"): _go(_KARPENTER, _KARPENTER_CRD.format("karpenter.sh_nodepools"), None),
    ("karpenter.k8s.aws", "v1", "EC2NodeClass"): _go(
        _KARPENTER, _KARPENTER_CRD.format("karpenter.k8s.aws_ec2nodeclasses"), None
    ),
    # Seldon Core v1: no registry ships its CRD (see the note).
    ("machinelearning.seldon.io", "v1", "SeldonDeployment"): CrdSource(
        "none",
        _SELDON[0],
        _SELDON[1],
        "operator/config/crd/bases/machinelearning.seldon.io_seldondeployments.yaml",
        "seldon",
        "the CRD lives only in the seldon-core repository (operator/ Go module): the Go module "
        "proxy refuses github.com/seldonio/seldon-core/operator at every version (403 'not "
        "available'), and neither the seldon-core PyPI package nor any npm/Maven artifact ships "
        "it. Checked instead: metadata, and each componentSpecs[].spec as a core/v1 PodSpec",
    ),
}


# --------------------------------------------------------------------------------------
# Fetching the CRD schemas (once, cached)
# --------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    env = os.environ.get("STRATA_CRD_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "strata" / "crds"


class SchemaFetchError(RuntimeError):
    pass


def _schema_file(cache_dir: Path, gvk: GVK, source: CrdSource) -> Path:
    group, version, kind = gvk
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", source.key)
    return cache_dir / "schemas" / safe / f"{group or 'core'}_{version}_{kind}.json"


@contextlib.contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(cmd: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None, timeout: int = 900) -> str:
    try:
        done = subprocess.run(
            cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError as error:
        raise SchemaFetchError(f"{cmd[0]} is not installed: {error}") from None
    except subprocess.TimeoutExpired:
        raise SchemaFetchError(f"timed out after {timeout}s: {' '.join(cmd)}") from None
    if done.returncode != 0:
        raise SchemaFetchError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return done.stdout


def _load_yaml_documents(text: str) -> list[Any]:
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        pass

    # YAML 1.1 resolves a bare `=` (an enum value in some CRDs) to the `value` tag,
    # which the safe loader cannot construct; it is just the string "=".
    Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))
    return [doc for doc in yaml.load_all(text, Loader=Loader) if doc]


def _crd_version_schemas(documents: Iterable[Any]) -> dict[GVK, dict]:
    """Every (group, version, kind) -> openAPIV3Schema in a stream of CRD documents."""
    found: dict[GVK, dict] = {}
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc.get("spec", {})
        group, kind = spec.get("group", ""), spec.get("names", {}).get("kind", "")
        for entry in spec.get("versions", []):
            schema = (entry.get("schema") or {}).get("openAPIV3Schema") or (spec.get("validation") or {}).get(
                "openAPIV3Schema"
            )
            if schema is not None and entry.get("served", True):
                found[(group, entry["name"], kind)] = schema
    return found


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(value, handle)
    os.replace(handle.name, path)


def go_download_command(module: str, version: str) -> list[str]:
    return ["go", "mod", "download", "-json", f"{module}@{version}"]


def _go_env(cache_dir: Path) -> dict[str, str]:
    # A module cache of our own (writable, so `rm -rf` works); the proxy is the go
    # command's configured GOPROXY.
    return {"GOMODCACHE": str(cache_dir / "gomod"), "GOFLAGS": "-modcacherw", "GOTOOLCHAIN": "local"}


def _fetch_go(cache_dir: Path, module: str, version: str, paths: set[str]) -> dict[str, list[Any]]:
    """`go mod download` the module; return the YAML documents of each wanted file."""
    out = _run(go_download_command(module, version), env=_go_env(cache_dir))
    info = json.loads(out)
    if info.get("Error") or not info.get("Zip"):
        raise SchemaFetchError(f"go mod download {module}@{version}: {info.get('Error', 'no zip')}")
    documents: dict[str, list[Any]] = {}
    with zipfile.ZipFile(info["Zip"]) as archive:
        for path in paths:
            member = f"{module}@{version}/{path}"
            try:
                documents[path] = _load_yaml_documents(archive.read(member).decode())
            except KeyError:
                raise SchemaFetchError(f"{module}@{version} has no {path}") from None
    return documents


_STRIMZI_POM = """<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.strata.schemas</groupId><artifactId>strimzi-crds</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>io.strimzi</groupId><artifactId>api</artifactId><version>{api}</version></dependency>
    <dependency><groupId>io.strimzi</groupId><artifactId>crd-generator</artifactId><version>{generator}</version></dependency>
  </dependencies>
</project>
"""
# Generator flags that shape the schema; others (descriptions, docs) do not matter here.
_STRIMZI_SCHEMA_FLAGS = ("--label", "--target-kube", "--crd-api-version", "--api-versions", "--storage-version")


def strimzi_generator_runs(api_pom: str) -> list[tuple[list[str], list[str]]]:
    """From Strimzi's api pom: (flags, model classes) of each run that writes the CRDs
    shipped in `packaging/install/cluster-operator`."""
    runs = []
    for execution in ET.fromstring(api_pom).iterfind(".//{*}execution"):
        args = [(arg.text or "").strip() for arg in execution.iterfind(".//{*}arguments/{*}argument")]
        if "io.strimzi.crdgenerator.CrdGenerator" not in args:
            continue
        args = args[args.index("io.strimzi.crdgenerator.CrdGenerator") + 1 :]
        targets = [a.split("=", 1)[0] for a in args if "=" in a and "packaging" in a and "cluster-operator" in a]
        if not targets:
            continue
        flags: list[str] = []
        for index, arg in enumerate(args):
            if arg in _STRIMZI_SCHEMA_FLAGS and index + 1 < len(args):
                flags += [arg, args[index + 1]]
        runs.append((flags + ["--yaml"], targets))
    return runs


def strimzi_commands(work: Path, api_version: str) -> list[str]:
    """The shell commands `_fetch_strimzi` runs (for the setup docs)."""
    return [
        f"(pom.xml: io.strimzi:api:{api_version} + io.strimzi:crd-generator:{STRIMZI_CRD_GENERATOR_VERSION})",
        f"cd {work} && mvn -q -B dependency:build-classpath -Dmdep.outputFile=cp.txt",
        "java -cp $(cat cp.txt) io.strimzi.crdgenerator.CrdGenerator <flags from the api jar's pom> "
        "io.strimzi.api.kafka.model.kafka.Kafka=kafka.yaml ...",
    ]


def _fetch_strimzi(cache_dir: Path, version: str, classes: set[str]) -> dict[str, list[Any]]:
    work = cache_dir / "maven" / f"strimzi-{version}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(_STRIMZI_POM.format(api=version, generator=STRIMZI_CRD_GENERATOR_VERSION))
    _run(["mvn", "-q", "-B", "dependency:build-classpath", "-Dmdep.outputFile=cp.txt"], cwd=work)
    classpath = (work / "cp.txt").read_text().strip()
    api_jar = next((p for p in classpath.split(os.pathsep) if f"/io/strimzi/api/{version}/" in p), None)
    if api_jar is None:
        raise SchemaFetchError(f"io.strimzi:api:{version} not on the resolved classpath")
    with zipfile.ZipFile(api_jar) as archive:
        pom = archive.read("META-INF/maven/io.strimzi/api/pom.xml").decode()
    documents: dict[str, list[Any]] = {}
    for flags, targets in strimzi_generator_runs(pom):
        wanted = [t for t in targets if t in classes]
        if not wanted:
            continue
        outputs = {t: work / f"{t.rsplit('.', 1)[-1]}.yaml" for t in wanted}
        _run(
            ["java", "-cp", classpath, "io.strimzi.crdgenerator.CrdGenerator", *flags,
             *(f"{t}={path}" for t, path in outputs.items())],
            cwd=work,
        )
        for target, path in outputs.items():
            documents[target] = _load_yaml_documents(path.read_text())
    missing = classes - set(documents)
    if missing:
        raise SchemaFetchError(f"Strimzi {version}'s build generates no CRD for {sorted(missing)}")
    return documents


def ensure_crd_schemas(
    cache_dir: Path | str | None = None, sources: Mapping[GVK, CrdSource] | None = None
) -> dict[GVK, Path]:
    """Fetch (once) every CRD schema in `sources` (default `CRD_SOURCES`).

    Returns (group, version, kind) -> a JSON file holding that version's raw
    `openAPIV3Schema`. Idempotent: schemas already in the cache are not fetched again
    (nothing touches the network then); a pin change fetches into a new folder. Kinds
    whose source is "none" are not in the result. Raises `SchemaFetchError` naming the
    command that failed.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    sources = CRD_SOURCES if sources is None else sources
    wanted = {gvk: src for gvk, src in sources.items() if src.source != "none"}
    result = {gvk: _schema_file(cache_dir, gvk, src) for gvk, src in wanted.items()}
    if all(path.exists() for path in result.values()):
        return result
    with _locked(cache_dir):
        missing = {gvk: src for gvk, src in wanted.items() if not result[gvk].exists()}
        by_artifact: dict[tuple[str, str, str], dict[GVK, CrdSource]] = {}
        for gvk, src in missing.items():
            by_artifact.setdefault((src.source, src.artifact, src.version), {})[gvk] = src

        def fetch(item: tuple[tuple[str, str, str], dict[GVK, CrdSource]]) -> None:
            (kind_of_source, artifact, version), entries = item
            paths = {src.path for src in entries.values()}
            if kind_of_source == "go":
                documents = _fetch_go(cache_dir, artifact, version, paths)
            elif kind_of_source == "maven-strimzi":
                documents = _fetch_strimzi(cache_dir, version, paths)
            else:
                raise SchemaFetchError(f"unknown schema source {kind_of_source!r}")
            for gvk, src in entries.items():
                schemas = _crd_version_schemas(documents[src.path])
                if gvk not in schemas:
                    raise SchemaFetchError(
                        f"{artifact}@{version}:{src.path} has no served CRD version for {gvk}; it has {sorted(schemas)}"
                    )
                _write_json(result[gvk], schemas[gvk])

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(fetch, by_artifact.items()))
    return result


def crd_documents(cache_dir: Path | str | None = None, sources: Mapping[GVK, CrdSource] | None = None) -> list[dict]:
    """The whole CRD documents (names, scope, every version, subresources, CEL rules) that
    `CRD_SOURCES` takes its schemas from, one per CRD, for installing them on a real API
    server (the local control plane). Same artifacts and cache as `ensure_crd_schemas`."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    sources = CRD_SOURCES if sources is None else sources
    ensure_crd_schemas(cache_dir, sources)
    wanted = {(gvk[0], gvk[2]) for gvk, src in sources.items() if src.source != "none"}
    by_artifact: dict[tuple[str, str, str], set[str]] = {}
    for src in sources.values():
        if src.source != "none":
            by_artifact.setdefault((src.source, src.artifact, src.version), set()).add(src.path)
    found: dict[str, dict] = {}
    for (kind_of_source, artifact, version), paths in sorted(by_artifact.items()):
        if kind_of_source == "go":
            documents = _fetch_go(cache_dir, artifact, version, paths)
        else:
            work = cache_dir / "maven" / f"strimzi-{version}"
            generated = {p: work / f"{p.rsplit('.', 1)[-1]}.yaml" for p in paths}
            if all(path.exists() for path in generated.values()):
                documents = {p: _load_yaml_documents(path.read_text()) for p, path in generated.items()}
            else:
                documents = _fetch_strimzi(cache_dir, version, paths)
        for docs in documents.values():
            for doc in docs:
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc.get("spec", {})
                if (spec.get("group", ""), spec.get("names", {}).get("kind", "")) in wanted:
                    found[doc["metadata"]["name"]] = doc
    return [found[name] for name in sorted(found)]


def setup_commands() -> list[str]:
    """The fetch commands, one per artifact (what `ensure_crd_schemas` runs)."""
    commands: list[str] = []
    for src in {(s.source, s.artifact, s.version): s for s in CRD_SOURCES.values()}.values():
        if src.source == "go":
            commands.append(" ".join(go_download_command(src.artifact, src.version)))
        elif src.source == "maven-strimzi":
            commands += strimzi_commands(Path("~/.cache/strata/crds/maven") / f"strimzi-{src.version}", src.version)
    return commands


# --------------------------------------------------------------------------------------
# Structural schema -> JSON Schema
# --------------------------------------------------------------------------------------

_DROP = frozenset({"description", "format", "default", "example", "externalDocs", "title", "nullable"})


def crd_to_jsonschema(schema: Mapping[str, Any], *, _in_combinator: bool = False, _root: bool = True) -> dict:
    """A CRD version's `openAPIV3Schema` as a JSON Schema (draft 4 keywords).

    - `x-kubernetes-*` extensions are dropped after being applied:
      `int-or-string` -> integer or string; `preserve-unknown-fields` -> unknown fields
      allowed; `embedded-resource` -> `apiVersion`/`kind`/`metadata` allowed.
    - An object that does not preserve unknown fields and declares no
      `additionalProperties` gets `additionalProperties: false`, so an unknown (e.g.
      misspelled) field fails, as the server's strict field validation does. Branches
      of `anyOf`/`oneOf`/`allOf` only add constraints (structural schemas cannot declare
      fields there) and are left open.
    - `nullable: true` admits null. The root `metadata` is checked separately (as
      ObjectMeta), so it is left open here.
    """
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in _DROP:
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: crd_to_jsonschema(sub, _root=False) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, Mapping):
            out[key] = crd_to_jsonschema(value, _in_combinator=_in_combinator or key == "not", _root=False)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [crd_to_jsonschema(sub, _in_combinator=True, _root=False) for sub in value]
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if _root:  # the server always accepts these at the root (some CRDs, e.g. Istio's, omit them)
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props["metadata"] = {"type": "object"}
    is_object = out.get("type") == "object" or (not _in_combinator and "properties" in out and "type" not in out)
    if (
        is_object
        and not _in_combinator
        and not schema.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in schema
    ):
        out["additionalProperties"] = False
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@functools.lru_cache(maxsize=None)
def _crd_validator(schema_file: str) -> jsonschema.Draft4Validator:
    raw = json.loads(Path(schema_file).read_text())
    return jsonschema.Draft4Validator(crd_to_jsonschema(raw))


# --------------------------------------------------------------------------------------
# Built-in kinds: kubernetes-validate's schemas
# --------------------------------------------------------------------------------------


def supported_kubernetes_versions() -> list[str]:
    from kubernetes_validate.utils import all_versions, major_minor

    return sorted({major_minor(v) for v in all_versions()}, key=lambda v: tuple(int(p) for p in v.split(".")))


def _schema_dir(kubernetes_version: str) -> str:
    """The strict schema folder of exactly this minor version (no silent fallback)."""
    from kubernetes_validate.utils import all_versions, major_minor

    minor = major_minor(kubernetes_version.lstrip("v"))
    for version in all_versions():
        if major_minor(version) == minor:
            return f"v{version}-local-strict"
    raise ValueError(
        f"kubernetes-validate ships no schemas for Kubernetes {minor} "
        f"(it has {', '.join(supported_kubernetes_versions())}); upgrade the package"
    )


@functools.lru_cache(maxsize=None)
def _schema_json(schema_dir: str, filename: str) -> Any:
    from importlib import resources

    ref = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema", schema_dir, filename)
    if not ref.is_file():
        return None
    return json.loads(ref.read_text())


@functools.lru_cache(maxsize=None)
def _builtin_validator(schema_dir: str, filename: str) -> jsonschema.protocols.Validator | None:
    from referencing import Registry, Resource

    schema = _schema_json(schema_dir, filename)
    if schema is None:
        return None
    definitions = _schema_json(schema_dir, "_definitions.json")
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _builtin_filename(api_version: str, kind: str) -> str:
    # kubernetes-validate's naming: rbac.authorization.k8s.io/v1 -> rbac-v1; v1 -> v1
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    return f"{kind.lower()}-{group_version}.json"


# --------------------------------------------------------------------------------------
# Resources -> manifests
# --------------------------------------------------------------------------------------


def parse_type(type_token: str) -> tuple[str, str, str] | None:
    """`kubernetes:apps/v1:Deployment` -> ("apps", "v1", "Deployment"); core -> group "".

    None for tokens that are not one Kubernetes object (non-kubernetes, providers,
    Helm/YAML/kustomize).
    """
    parts = type_token.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes":
        return None
    module, kind = parts[1], parts[2]
    if module.startswith(_NON_MANIFEST_MODULES) or "/" not in module:
        return None
    group, version = module.rsplit("/", 1)
    return ("" if group == "core" else group), version, kind


def is_builtin_group(group: str) -> bool:
    return group in _BUILTIN_PLAIN_GROUPS or group.endswith(".k8s.io")


def _as_sent(value: Any) -> Any:
    """Nulls dropped (pulumi-kubernetes omits them), integral floats as ints: Pulumi's
    wire format carries every number as a double (so the mocks record `3.0`), and the
    provider's JSON encoding sends `3.0` as `3`, which is what the server validates."""
    if isinstance(value, dict):
        return {k: _as_sent(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_as_sent(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def to_manifest(resource: PlannedResource) -> dict:
    """The object a pulumi-kubernetes resource sends to the API server.

    apiVersion/kind come from the type token (`*Patch` types: the patched kind);
    top-level inputs that are Pulumi's own (`__*`) are dropped; values as the provider
    sends them (`_as_sent`).
    """
    parsed = parse_type(resource.type)
    if parsed is None:
        raise ValueError(f"{resource.type} is not a Kubernetes object type")
    group, version, kind = parsed
    if kind.endswith("Patch"):
        kind = kind[: -len("Patch")]
    manifest = {k: v for k, v in _as_sent(resource.inputs).items() if not k.startswith("__")}
    manifest["apiVersion"] = f"{group}/{version}" if group else version
    manifest["kind"] = kind
    metadata = dict(manifest.get("metadata") or {})
    # pulumi-kubernetes auto-names an object without metadata.name (logical name plus a
    # random suffix), but does so in the provider, which mocks bypass: here the name may
    # be absent, so the logical name stands in for it for validation.
    metadata.setdefault("name", resource.name)
    manifest["metadata"] = metadata
    return manifest


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


@dataclass
class Finding:
    """The validation result of one resource."""

    resource: str  # type token + logical name
    kind: str  # "builtin" | "custom" | "helm" | "unverifiable"
    errors: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def _path(error: jsonschema.ValidationError) -> str:
    text = ""
    for part in error.absolute_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


def _messages(errors: Iterable[jsonschema.ValidationError], *, prefix: str = "", skip_required: bool = False) -> list[str]:
    found = []
    for error in sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        if skip_required and error.validator == "required":
            continue
        message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
        found.append(f"{prefix}{_path(error)}: {message}")
    return found


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_LABEL_KINDS = frozenset({"Namespace", "Service"})


def _metadata_errors(manifest: Mapping[str, Any]) -> list[str]:
    """The API server's own checks on names and labels (not in the OpenAPI schema)."""
    errors = []
    metadata = manifest.get("metadata") or {}
    name = metadata.get("name")
    if isinstance(name, str) and "<" not in name:
        label_like = manifest.get("kind") in _DNS_LABEL_KINDS
        pattern, limit = (_DNS_LABEL, 63) if label_like else (_DNS_SUBDOMAIN, 253)
        if len(name) > limit or not pattern.match(name):
            errors.append(f"metadata.name: {name!r} is not a valid DNS-1123 {'label' if label_like else 'subdomain'}")
    for key, value in (metadata.get("labels") or {}).items():
        prefix, _, local = key.rpartition("/")
        if len(local) > 63 or not _LABEL_NAME.match(local) or (prefix and not _DNS_SUBDOMAIN.match(prefix)):
            errors.append(f"metadata.labels: invalid label key {key!r}")
        if isinstance(value, str) and "<" not in value and (len(value) > 63 or not _LABEL_VALUE.match(value)):
            errors.append(f"metadata.labels.{key}: invalid label value {value!r}")
    return errors


def validate_builtin(manifest: Mapping[str, Any], kubernetes_version: str, *, partial: bool = False) -> list[str]:
    """Errors of a built-in-kind manifest against Kubernetes `kubernetes_version` (strict)."""
    schema_dir = _schema_dir(kubernetes_version)
    validator = _builtin_validator(schema_dir, _builtin_filename(manifest["apiVersion"], manifest["kind"]))
    if validator is None:
        return [f"{manifest['apiVersion']} {manifest['kind']} is not served by Kubernetes {kubernetes_version}"]
    return _messages(validator.iter_errors(manifest), skip_required=partial) + _metadata_errors(manifest)


def _object_meta_errors(metadata: Any, kubernetes_version: str) -> list[str]:
    validator = _builtin_validator(_schema_dir(kubernetes_version), "objectmeta-meta-v1.json")
    return _messages(validator.iter_errors(metadata), prefix="metadata.") if validator else []


def validate_custom(manifest: Mapping[str, Any], schema_file: Path | str, kubernetes_version: str) -> list[str]:
    """Errors of a custom resource against its CRD version's schema (+ ObjectMeta)."""
    errors = _messages(_crd_validator(str(schema_file)).iter_errors(manifest))
    errors += _object_meta_errors(manifest.get("metadata", {}), kubernetes_version)
    return errors + _metadata_errors(manifest)


def validate_helm_release(resource: PlannedResource) -> list[str]:
    errors = []
    values = resource.inputs.get("values", {})
    if not isinstance(values, Mapping):
        errors.append(f"values: must be a mapping, got {type(values).__name__}")
    version = resource.inputs.get("version")
    if not isinstance(version, str) or not _EXACT_SEMVER.match(version):
        errors.append(f"version: {version!r} is not an exact semver pin")
    if not resource.inputs.get("chart"):
        errors.append("chart: missing")
    return errors


def _seldon_partial_errors(manifest: Mapping[str, Any], kubernetes_version: str) -> list[str]:
    """What can be checked of a SeldonDeployment without its CRD: metadata, and every
    predictor's componentSpecs[].spec, which the CRD types as a core/v1 PodSpec."""
    errors = _object_meta_errors(manifest.get("metadata", {}), kubernetes_version) + _metadata_errors(manifest)
    validator = _builtin_validator(_schema_dir(kubernetes_version), "podspec-v1.json")
    spec = manifest.get("spec")
    if not isinstance(spec, Mapping):
        return errors + ["spec: must be an object"]
    for i, predictor in enumerate(spec.get("predictors") or []):
        for j, component in enumerate((predictor or {}).get("componentSpecs") or []):
            pod_spec = (component or {}).get("spec")
            if pod_spec is not None and validator is not None:
                errors += _messages(
                    validator.iter_errors(pod_spec), prefix=f"spec.predictors[{i}].componentSpecs[{j}].spec."
                )
    return errors


def kubernetes_version_of(plan: Plan) -> str:
    try:
        return str(plan.spec.config.cluster.kubernetes_version)
    except AttributeError:
        return DEFAULT_KUBERNETES_VERSION


def validate_resource(
    resource: PlannedResource,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    crd_schemas: Mapping[GVK, Path] | None = None,
) -> Finding | None:
    """Validate one planned resource; None if it is not a Kubernetes object or release."""
    label = f"{resource.type} {resource.name}"
    if resource.type in HELM_RELEASE_TYPES:
        return Finding(label, "helm", validate_helm_release(resource))
    parsed = parse_type(resource.type)
    if parsed is None or not resource.custom:
        return None
    group, version, kind = parsed
    partial = kind.endswith("Patch")
    manifest = to_manifest(resource)
    errors = []
    for key in ("apiVersion", "kind"):
        given = resource.inputs.get(key)
        if given is not None and given != manifest[key] and not partial:
            errors.append(f"{key}: input {given!r} disagrees with the type token ({manifest[key]!r})")
    if is_builtin_group(group):
        return Finding(label, "builtin", errors + validate_builtin(manifest, kubernetes_version, partial=partial))
    gvk = (group, version, manifest["kind"])
    source = CRD_SOURCES.get(gvk)
    if source is None:
        return Finding(label, "custom", errors + [
            f"{group}/{version} {manifest['kind']} has no CRD schema source in infra/plan/schemas.py "
            "CRD_SOURCES: add the pinned operator's CRD there"
        ])
    if source.source == "none":
        return Finding(label, "unverifiable", errors + _seldon_partial_errors(manifest, kubernetes_version), source.note)
    if crd_schemas is None:
        crd_schemas = ensure_crd_schemas()
    if gvk not in crd_schemas:
        return Finding(label, "custom", errors + [f"no fetched CRD schema for {gvk}"])
    return Finding(label, "custom", errors + validate_custom(manifest, crd_schemas[gvk], kubernetes_version))


def validate_plan(plan: Plan, crd_schemas: Mapping[GVK, Path] | None = None) -> list[Finding]:
    """Validate every Kubernetes object and Helm release of a plan."""
    version = kubernetes_version_of(plan)
    findings = []
    for resource in plan.resources:
        finding = validate_resource(resource, version, crd_schemas)
        if finding is not None:
            findings.append(finding)
    return findings


def chart_version_mismatches(
    sources: Mapping[GVK, CrdSource] | None = None,
) -> list[tuple[GVK, CrdSource, str]]:
    """Where a schema's operator version differs from the version actually deployed:
    `infra.platform.charts.CHARTS[source.chart].app_version`, and for Karpenter
    `infra.crds.karpenter.KARPENTER_VERSION`. Each as (gvk, source, message)."""
    try:
        from infra.platform.charts import CHARTS
    except ImportError:
        CHARTS = {}
    try:
        from infra.crds.karpenter import KARPENTER_VERSION
    except ImportError:
        KARPENTER_VERSION = None
    mismatches = []
    for gvk, src in sorted((CRD_SOURCES if sources is None else sources).items()):
        pin = CHARTS.get(src.chart) if src.chart else None
        if pin is not None:
            deployed, where = pin.app_version, f"chart {pin.key!r} app_version"
        elif src.artifact == _KARPENTER[0] and KARPENTER_VERSION:
            deployed, where = KARPENTER_VERSION, "infra.crds.karpenter.KARPENTER_VERSION"
        else:
            continue
        if deployed.lstrip("v") != src.version.lstrip("v"):
            message = f"{gvk[0]}/{gvk[1]} {gvk[2]}: schema from {src.key}, but {where} is {deployed}"
            mismatches.append((gvk, src, message + (f" ({src.note})" if src.note else "")))
    return mismatches
