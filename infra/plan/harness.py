"""Run the real Pulumi program under Pulumi's mocks and record every registration.

No engine, no cloud credentials: the program's Python runs as in `pulumi preview`, and
each `RegisterResource` is captured with its type token, logical name, parent, provider,
explicit dependencies and fully resolved inputs (secret inputs unwrapped and listed).
This is what `strata plan`, the policy checks and the infra tests all read.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

SECRET_PLACEHOLDER = "[secret]"
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


@dataclass
class PlannedResource:
    """One registration: a custom resource (`custom=True`) or a component."""

    urn: str
    type: str
    name: str
    parent_urn: str | None
    custom: bool
    inputs: dict[str, Any]
    secret_paths: tuple[str, ...] = ()  # input property paths that were secret
    provider: str | None = None
    dependencies: tuple[str, ...] = ()  # URNs from depends_on

    @property
    def is_kubernetes(self) -> bool:
        return self.type.startswith("kubernetes:")

    @property
    def kind(self) -> str:
        """`kubernetes:apps/v1:Deployment` -> `Deployment`; other tokens -> last segment."""
        return self.type.rsplit(":", 1)[-1]


@dataclass
class Plan:
    stack: str
    resources: list[PlannedResource]
    outputs: dict[str, Any]
    seconds: float
    spec: Any = None  # the StackSpec the program was built from
    import_seconds: float = 0.0  # importing the layers' modules (first plan in a process pays it)
    notes: list[str] = field(default_factory=list)

    def by_type(self, type_token: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == type_token]

    def of_kind(self, kind: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.is_kubernetes and r.kind == kind]

    def children_of(self, urn: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.parent_urn == urn]

    @property
    def custom_resources(self) -> list[PlannedResource]:
        return [r for r in self.resources if r.custom]


def _unwrap_secrets(value: Any, path: str, found: list[str]) -> Any:
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            found.append(path or "<root>")
            return _unwrap_secrets(value.get("value"), path, [])
        return {k: _unwrap_secrets(v, f"{path}.{k}" if path else k, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    return value


def _fake_outputs(type_token: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Plausible provider outputs so downstream `apply`s have values to work on."""
    outputs = dict(inputs)
    outputs.setdefault("arn", f"arn:aws:mock:::{name}")
    outputs.setdefault("name", inputs.get("name", name))
    if type_token == "aws:eks/cluster:Cluster":
        outputs.update(
            endpoint=f"https://{name}.eks.mock",
            certificateAuthority={"data": "bW9jaw=="},
            identities=[{"oidcs": [{"issuer": f"https://oidc.eks.mock/id/{name}"}]}],
            vpcConfig={**(inputs.get("vpcConfig") or {}), "clusterSecurityGroupId": f"sg-{name}-cluster"},
        )
    if type_token == "aws:ec2/launchTemplate:LaunchTemplate":
        outputs["latestVersion"] = 1
    if type_token == "aws:ec2/natGateway:NatGateway":
        outputs["publicIp"] = f"198.18.{sum(map(ord, name)) % 250}.{len(name) % 250 + 1}"
    if type_token == "aws:rds/instance:Instance":
        outputs.update(address=f"{name}.rds.mock", port=5432, endpoint=f"{name}.rds.mock:5432")
    if type_token == "aws:elasticache/replicationGroup:ReplicationGroup":
        outputs.update(primaryEndpointAddress=f"master.{inputs.get('replicationGroupId', name)}.cache.mock",
                       readerEndpointAddress=f"replica.{inputs.get('replicationGroupId', name)}.cache.mock")
    if type_token == "aws:ecr/repository:Repository":
        outputs["repositoryUrl"] = f"000000000000.dkr.ecr.mock/{inputs.get('name', name)}"
    if type_token == "aws:sqs/queue:Queue":
        outputs["url"] = f"https://sqs.mock/{name}"
    if type_token.startswith("kubernetes:") and isinstance(inputs.get("metadata"), dict):
        metadata = dict(inputs["metadata"])
        metadata.setdefault("name", name)
        outputs["metadata"] = metadata
    if type_token == "kubernetes:helm.sh/v3:Release":
        outputs["status"] = {"namespace": inputs.get("namespace", "default"), "name": inputs.get("name", name), "status": "deployed"}
    return outputs


def _fake_call(token: str, args: dict[str, Any], region: str) -> dict[str, Any]:
    if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
        names = [f"{region}{suffix}" for suffix in "abcdef"]
        return {"names": names, "zoneIds": [f"zone-{n}" for n in names], "id": region}
    if token == "aws:index/getCallerIdentity:getCallerIdentity":
        return {"accountId": "000000000000", "arn": "arn:aws:iam::000000000000:user/plan", "userId": "plan", "id": "000000000000"}
    if token == "aws:index/getRegion:getRegion":
        return {"name": region, "region": region, "id": region}
    if token == "aws:index/getPartition:getPartition":
        return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
    if token == "aws:iam/getPolicyDocument:getPolicyDocument":
        return {"json": json.dumps(_policy_document(args)), "id": "doc"}
    if token == "aws:ssm/getParameter:getParameter":
        return {"value": "ami-0123456789abcdef0", "name": args.get("name"), "type": "String", "id": args.get("name")}
    if token == "aws:ec2/getAmi:getAmi":
        return {"id": "ami-0123456789abcdef0", "imageId": "ami-0123456789abcdef0"}
    return {"id": token}


def _policy_document(args: dict[str, Any]) -> dict[str, Any]:
    statements = []
    for statement in args.get("statements", []) or []:
        rendered: dict[str, Any] = {"Effect": statement.get("effect", "Allow")}
        if statement.get("actions"):
            rendered["Action"] = statement["actions"]
        if statement.get("resources"):
            rendered["Resource"] = statement["resources"]
        for principal in statement.get("principals", []) or []:
            rendered.setdefault("Principal", {})[principal["type"]] = principal["identifiers"]
        for condition in statement.get("conditions", []) or []:
            rendered.setdefault("Condition", {}).setdefault(condition["test"], {})[condition["variable"]] = condition["values"]
        statements.append(rendered)
    return {"Version": "2012-10-17", "Statement": statements}


def mock_resource_id(name: str) -> str:
    """The physical id the mocks give a resource (node groups reference launch templates by it)."""
    return f"{name}-id"


def make_mocks(region: str, records: list[PlannedResource]):
    """Mocks + a monitor that appends every registration to `records`."""
    import pulumi

    class RecordingMocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            return _mock_resource(args.typ, args.name, _unwrap_secrets(args.inputs, "", []))

        def call(self, args: pulumi.runtime.MockCallArgs):
            return _fake_call(args.token, args.args, region), []

    class RecordingMonitor(pulumi.runtime.mocks.MockMonitor):
        """MockMonitor.RegisterResource, reading and unwrapping each request once (for the
        record and the mock outputs alike) and answering plain outputs without the SDK's
        async serialiser: it runs once per resource, a thousand times in a 20-model plan."""

        def RegisterResource(self, request):
            from pulumi.runtime import rpc
            from pulumi.runtime.proto import resource_pb2
            from pulumi.runtime.sync_await import _ensure_event_loop

            urn = self.make_urn(request.parent, request.type, request.name)
            if request.type == "pulumi:pulumi:Stack":
                return resource_pb2.RegisterResourceResponse(urn=urn)
            _ensure_event_loop()  # resource references deserialise on a loop
            raw = rpc.deserialize_properties(request.object, keep_unknowns=True)
            secret_paths: list[str] = []
            inputs = _unwrap_secrets(raw, "", secret_paths)
            records.append(
                PlannedResource(
                    urn=urn,
                    type=request.type,
                    name=request.name,
                    parent_urn=request.parent or None,
                    custom=bool(request.custom),
                    inputs=_plain(inputs),
                    secret_paths=tuple(secret_paths),
                    provider=request.provider or None,
                    dependencies=tuple(request.dependencies),
                )
            )
            resource_id, state = _mock_resource(request.type, request.name, inputs)
            self.resources[urn] = pulumi.runtime.mocks.MockMonitor.ResourceRegistration(urn, resource_id, state)
            return resource_pb2.RegisterResourceResponse(urn=urn, id=resource_id, object=_outputs_struct(state))

    mocks = RecordingMocks()
    return mocks, RecordingMonitor(mocks)


def _mock_resource(type_token: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The mock provider's answer to a registration (inputs with secrets unwrapped): id and outputs."""
    if type_token.startswith("pulumi:providers:"):
        return mock_resource_id(name), inputs
    return mock_resource_id(name), _fake_outputs(type_token, name, inputs)


def _outputs_struct(state: dict[str, Any]):
    """Outputs as the protobuf Struct the SDK reads back. Plain JSON data (every mock output
    here) is copied directly, as Pulumi's serialiser would write it (top-level `None`s left
    out); anything else (a resource reference, an Output) goes through that serialiser."""
    from google.protobuf import struct_pb2
    from pulumi.runtime import rpc
    from pulumi.runtime.sync_await import _sync_await

    struct = struct_pb2.Struct()
    try:
        struct.update({key: value for key, value in state.items() if value is not None})
    except (TypeError, ValueError):
        return _sync_await(rpc.serialize_properties(state, {}))
    return struct


def _plain(value: Any) -> Any:
    """Inputs as JSON-able data (unknowns and resource references as strings)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "urn"):
        return "<resource>"
    return str(value)


@contextlib.contextmanager
def _quiet_garbage_collector():
    """Pulumi's runtime makes hundreds of thousands of short-lived objects per plan; with the
    default thresholds the collector rescans everything alive again and again, and a
    20-model plan spent more than half its time there. Freeze what exists, collect rarely
    during the evaluation (a 20-model plan peaks near 360 MB), restore afterwards."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each submitted call at once on the caller's thread. Pulumi hands every monitor
    call to the loop's default executor; under mocks the monitor is plain Python, so the
    hop to a worker thread buys nothing and costs a GIL hand-over per registration (a
    quarter of a 20-model plan's time)."""

    def submit(self, fn, /, *args, **kwargs):
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # handed to the awaiting task, as a worker thread would
            future.set_exception(error)
        return future


@contextlib.contextmanager
def _monitor_calls_inline():
    """The loop Pulumi's mocks run on calls the monitor inline; its own executor is restored after."""
    from pulumi.runtime.sync_await import _ensure_event_loop

    loop = _ensure_event_loop()
    previous = loop._default_executor  # None until first used; asyncio has no public getter
    loop.set_default_executor(_InlineExecutor())
    try:
        yield
    finally:
        loop._default_executor = previous


def _no_stack_trace():
    from pulumi.runtime.proto import source_pb2

    return source_pb2.StackTrace()


def config_for_pulumi(raw: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Stack-file config -> the string map Pulumi hands a program, and its secret keys.

    `secure:` values cannot be decrypted offline: they become a placeholder, still secret.
    """
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in raw.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[key] = SECRET_PLACEHOLDER
            secret_keys.append(key)
        elif isinstance(value, (dict, list)):
            config[key] = json.dumps(value)
        else:
            config[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return config, secret_keys


def run_program(stack: str, raw_config: Mapping[str, Any], root: Path | None = None) -> Plan:
    """Run `infra.program.build` for one stack's config under mocks; return what it registered."""
    os.environ.setdefault("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "true")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pulumi_aws warns on first import
        import pulumi
        import pulumi_aws  # noqa: F401  (its first import warns; keep that out of the plan output)

    from infra.config import PROJECT, PROJECT_ROOT, parse_stack_config
    from infra.program import StackSecrets, build, import_layers

    import_started = time.perf_counter()
    import_layers()  # module imports are start-up cost, not evaluation: timed apart
    import_seconds = time.perf_counter() - import_started

    spec = parse_stack_config(raw_config, stack, root=root or PROJECT_ROOT)
    config, secret_keys = config_for_pulumi(raw_config)
    if spec.capabilities.monitoring and f"{PROJECT}:pagerdutyRoutingKeys" not in config:
        # The real stack must set it with `pulumi config set --secret`; offline we only need its shape.
        from workloads.monitoring.rules import PLATFORM_ROUTING_KEY

        routing_key_names = sorted({m.pagerduty.routing_key_name for m in spec.models} | {PLATFORM_ROUTING_KEY})
        config[f"{PROJECT}:pagerdutyRoutingKeys"] = json.dumps({name: SECRET_PLACEHOLDER for name in routing_key_names})
        secret_keys.append(f"{PROJECT}:pagerdutyRoutingKeys")
    if spec.cdc_pipelines and spec.capabilities.kafka and f"{PROJECT}:cdcCredentials" not in config:
        # Set with `pulumi config set --secret strata:cdcCredentials '{...}'`; offline only its shape matters.
        config[f"{PROJECT}:cdcCredentials"] = json.dumps(
            {p.name: {"username": SECRET_PLACEHOLDER, "password": SECRET_PLACEHOLDER} for p in spec.cdc_pipelines})
        secret_keys.append(f"{PROJECT}:cdcCredentials")
    if spec.config.target.value == "kubeconfig" and f"{PROJECT}:kubeconfig" not in secret_keys:
        secret_keys.append(f"{PROJECT}:kubeconfig")

    outputs: dict[str, Any] = {}

    def program():
        strata = pulumi.Config(PROJECT)
        secrets = StackSecrets(
            pagerduty_routing_keys=strata.get_secret_object("pagerdutyRoutingKeys"),
            kubeconfig=strata.get_secret("kubeconfig"),
            cdc_credentials=strata.get_secret_object("cdcCredentials"),
        )
        exported = build(spec, secrets)
        return pulumi.Output.from_input(exported).apply(outputs.update)

    records, seconds = evaluate_under_mocks(program, stack, config, secret_keys, spec.region)
    return Plan(stack=stack, resources=records, outputs=_plain(outputs), seconds=seconds, spec=spec, import_seconds=import_seconds)


def evaluate_under_mocks(program, stack: str, config: dict[str, str], secret_keys: list[str],
                         region: str) -> tuple[list[PlannedResource], float]:
    """Run any Pulumi program function under the recording mocks: its registrations and seconds."""
    import pulumi

    from infra.config import PROJECT

    # Source positions (a stack walk per resource) only feed the Pulumi service's UI;
    # under mocks nobody reads them, and they cost ~10% of the evaluation.
    pulumi.runtime.resource._get_stack_trace = _no_stack_trace
    records: list[PlannedResource] = []
    mocks, monitor = make_mocks(region, records)
    pulumi.runtime.set_all_config(config, secret_keys)
    pulumi.runtime.settings.ROOT.set(None)  # a fresh Stack resource per run (several plans per process)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    started = time.perf_counter()
    with _quiet_garbage_collector(), _monitor_calls_inline():
        pulumi.runtime.mocks.test(program)()
    return records, time.perf_counter() - started


def run_stack(stack: str, root: Path | None = None) -> Plan:
    from infra.config import PROJECT_ROOT, read_stack_file

    return run_program(stack, read_stack_file(stack, root or PROJECT_ROOT), root)
