"""A gRPC client for the model server (serving environment: it needs Seldon's protos).

    echo '[{"data": {"ndarray": [[...]]}}]' | python -m workloads.serving.grpc_client 127.0.0.1:20000

reads a JSON list of Seldon messages (JSON form) on stdin, sends each with
`seldon.protos.Model/Predict` (or `Seldon/Predict` with `--service seldon`) and prints a
JSON list of `{"grpc_code": "OK", "response": {...}}`, `{"grpc_code": "INVALID_ARGUMENT",
"details": "<reason>: <what is wrong>", "trailers": {"strata-reason": ...}}` for a rejected
one, or `{"client_error": "..."}` when a message cannot be expressed as a SeldonMessage at
all. `--parallel N` sends each message N times at once (a load probe). `--metadata K=V`
(repeatable) is sent with every call (the local proxy routes on `seldon=<model>`); each
answer lists the server's initial metadata under `headers`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def send_all(target: str, messages: list[Any], service: str = "model", timeout: float = 10.0,
             repeat: int = 1, parallel: int = 1, metadata: tuple[tuple[str, str], ...] = ()) -> list[dict[str, Any]]:
    import grpc
    from google.protobuf import json_format
    from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    grpc.channel_ready_future(channel).result(timeout=timeout)
    stub = (prediction_pb2_grpc.SeldonStub if service == "seldon" else prediction_pb2_grpc.ModelStub)(channel)
    out: list[dict[str, Any]] = []
    for message in messages:
        try:
            request = json_format.ParseDict(message, prediction_pb2.SeldonMessage())
        except (json_format.ParseError, TypeError, ValueError) as error:
            out.append({"client_error": f"{type(error).__name__}: {error}"})
            continue
        if parallel > 1:
            calls = [stub.Predict.future(request, timeout=timeout, metadata=metadata) for _ in range(parallel)]
            out.extend(_outcome(call.result, grpc, json_format) for call in calls)
            continue
        result: dict[str, Any] = {}
        start = time.perf_counter()
        for _ in range(max(repeat, 1)):
            result = _outcome(lambda: stub.Predict.with_call(request, timeout=timeout, metadata=metadata),
                              grpc, json_format)
        result["seconds"] = (time.perf_counter() - start) / max(repeat, 1)
        out.append(result)
    channel.close()
    return out


def _outcome(call: Any, grpc: Any, json_format: Any) -> dict[str, Any]:
    try:
        answer = call()
    except grpc.RpcError as error:
        return {"grpc_code": error.code().name, "details": error.details(),
                "headers": {k: v for k, v in (error.initial_metadata() or ())},
                "trailers": {k: v for k, v in (error.trailing_metadata() or ())}}
    response, rpc = answer if isinstance(answer, tuple) else (answer, None)
    headers = {k: v for k, v in (rpc.initial_metadata() or ())} if rpc is not None else {}
    return {"grpc_code": "OK", "response": json_format.MessageToDict(response), "headers": headers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("--service", choices=("model", "seldon"), default="model")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                        help="sent with every call, e.g. seldon=fraud through the local proxy")
    args = parser.parse_args(argv)
    metadata = []
    for item in args.metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--metadata {item!r}: expected KEY=VALUE")
        metadata.append((key.lower(), value))
    messages = json.load(sys.stdin)
    json.dump(send_all(args.target, messages, args.service, args.timeout, args.repeat, args.parallel,
                       tuple(metadata)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
