"""gRPC helpers of the serving benchmark; run with the serving environment's Python (they
need Seldon's protos and grpcio):

    python tests/benchmarks/grpc_bench.py bare <weights.npz> <port>
        a bare gRPC server of the same model: `seldon.protos.Model/Predict`, a numpy
        forward pass, no validation, no metrics (the baseline);
    python tests/benchmarks/grpc_bench.py load <port> <rows.npy> <clients> <seconds>
        `clients` concurrent callers (grpc.aio) for `seconds`, one JSON result line.

A shed call (UNAVAILABLE with a `retry-after` trailer) waits what the trailer says (with
jitter), as a well-behaved client would; it is counted, not timed. Every loop stops by itself: a
deadline and a request budget. Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import numpy as np

MAX_REQUESTS = 200_000


def numpy_forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The scripted test model's forward pass (workloads.serving.testing.build_module)."""
    h = np.sign(x) * np.log1p(np.abs(x))
    layers = sorted({k.rsplit(".", 1)[0] for k in weights}, key=lambda k: int(k.split(".")[-1]))
    for i, layer in enumerate(layers):
        h = h @ weights[f"{layer}.weight"].T + weights[f"{layer}.bias"]
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def serve_bare(weights_file: str, port: int) -> None:
    from concurrent import futures

    import grpc
    from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

    weights = dict(np.load(weights_file))

    class Bare(prediction_pb2_grpc.ModelServicer):
        def Predict(self, request, context):  # noqa: N802 (the proto's name)
            tensor = request.data.tensor
            x = np.asarray(tensor.values, dtype=np.float32).reshape(tuple(tensor.shape))
            out = numpy_forward(weights, x)
            response = prediction_pb2.SeldonMessage()
            response.data.names.extend(["proba_0", "proba_1"])
            response.data.tensor.shape.extend(out.shape)
            response.data.tensor.values.extend(out.ravel().tolist())
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_pb2_grpc.add_ModelServicer_to_server(Bare(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def _load(port: int, rows: np.ndarray, clients: int, seconds: float, warmup: float,
                model: str | None = None) -> dict:
    import grpc
    from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

    request = prediction_pb2.SeldonMessage()
    request.data.tensor.shape.extend(rows.shape)
    request.data.tensor.values.extend(rows.ravel().tolist())
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(min(clients, 8))]
    stubs = [prediction_pb2_grpc.ModelStub(channel) for channel in channels]
    metadata = (("seldon", model),) if model else None  # through the local proxy: which model

    async def caller(index: int, stop_at: float, latencies: list, shed: list, others: list, budget: list) -> None:
        stub = stubs[index % len(stubs)]
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            start = time.perf_counter()
            try:
                await stub.Predict(request, timeout=10, metadata=metadata)
                latencies.append(time.perf_counter() - start)
            except grpc.aio.AioRpcError as error:
                trailers = dict(error.trailing_metadata() or ())
                if error.code() == grpc.StatusCode.UNAVAILABLE and "retry-after" in trailers:
                    shed.append(time.perf_counter() - start)
                    wait = float(trailers["retry-after"]) * random.uniform(0.5, 1.5)  # jitter: no returning burst
                    await asyncio.sleep(min(wait, max(stop_at - time.perf_counter(), 0)))
                else:
                    others.append(error.code().name)

    try:
        for stub in stubs:
            await stub.Predict(request, timeout=30, metadata=metadata)
        warm_stop = time.perf_counter() + warmup
        await asyncio.gather(*[caller(i, warm_stop, [], [], [], [10**9]) for i in range(clients)])
        latencies: list = []
        shed: list = []
        others: list = []
        budget = [MAX_REQUESTS]
        start = time.perf_counter()
        await asyncio.gather(*[caller(i, start + seconds, latencies, shed, others, budget) for i in range(clients)])
        elapsed = time.perf_counter() - start
    finally:
        for channel in channels:
            await channel.close()
    return summary(clients, latencies, shed, others, elapsed)


def summary(clients: int, latencies: list, shed: list, others: list, elapsed: float) -> dict:
    lat = np.asarray(latencies or [float("nan")]) * 1000
    return {"clients": clients, "ok": len(latencies), "rps": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "shed": len(shed), "other_errors": len(others), "other_codes": sorted(set(map(str, others)))}


if __name__ == "__main__":
    if sys.argv[1] == "bare":
        serve_bare(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "load":
        result = asyncio.run(_load(int(sys.argv[2]), np.load(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]),
                                   warmup=1.0, model=sys.argv[6] if len(sys.argv) > 6 else None))
        print(json.dumps(result))
