"""GetAction, StreamActions and PlayGame latency and throughput on loopback: this server vs a naive Keras server.

    python benchmarks/serve_latency.py [--onnx MODEL.onnx --keras MODEL.keras] [--duration 3]

Starts three servers as subprocesses on 127.0.0.1 (this script is also the other two):
this server; a naive one (``--naive-server MODEL.keras``: a sync gRPC server calling
``model.predict`` per request); and a no-work one (``--ceiling-server``: a grpc.aio
AgentService that answers action 0 without a model), which measures what gRPC in Python
itself costs on this machine: the ceiling any Python server reaches. It measures from this
process, which plays the clients:

* p50/p99 latency at concurrency 1 (one stack per request, a synchronous client), for
  GetAction and for StreamActions (one stream, request after request);
* actions/s (stacks answered per second) at concurrency 1, 8 and 64 with one stack per
  request, then at concurrency 64 with several stacks per request (a client that batches
  its games), from one grpc.aio client process;
* actions/s of 64 StreamActions streams, one stack per message (64 game sessions);
* the same for PlayGame (p50 at 1 session, actions/s at 64 sessions), each frame carrying raw
  screens (``--game-screens``, default the 2 RGB screens ``play --raw`` sends), against
  StreamActions: a session may cost more by what preprocessing adds to a forward pass (measured
  in this process, preprocessing and forward passes in turn as the server runs them: at 1
  session the wall time, at 64 the CPU time; each evicts the other's data from the caches, so
  this is more than a loop of preprocessing alone, also printed) plus what its larger messages
  cost gRPC (measured on the no-work server).

Client and servers share this machine's cores. Without ``--onnx`` or ``--keras``, an untrained
Q-network of the served architecture stands in for the missing one (weights do not change the
cost): ``--onnx models/breakout-dqn.onnx`` alone runs on a fresh clone.
Needs the ``train`` extra (TensorFlow, tf2onnx) for the baseline. Not a test: it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from serve_load import CHANNEL_OPTIONS, GameLoad, Row, payload, run_suite  # noqa: E402

from breakout.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402
from breakout_dqn import contract  # noqa: E402
from breakout_dqn.serving.client import AgentClient  # noqa: E402

TARGET_P50_MS = 1.0
TARGET_ACTIONS_PER_S = 5000.0
TARGET_SPEEDUP = 20.0


# ----------------------------------------------------------------------------- naive baseline server
def naive_server(keras_path: Path, port: int) -> int:
    """A sync gRPC server whose GetAction runs Keras ``model.predict`` on each request."""
    import threading
    from concurrent import futures

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from breakout_dqn.training.model import load_q_network

    model = load_q_network(keras_path)
    lock = threading.Lock()  # Keras models are not guaranteed thread-safe for predict

    class NaiveServicer(agent_pb2_grpc.AgentServiceServicer):
        def GetAction(self, request, context):  # noqa: N802 (gRPC method name)
            frames = contract.frames_from_bytes(request.frames)
            with lock:
                q_values = model.predict(frames, verbose=0)
            return agent_pb2.GetActionResponse(actions=np.argmax(q_values, axis=1).tolist(), model_version="naive")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=CHANNEL_OPTIONS)
    agent_pb2_grpc.add_AgentServiceServicer_to_server(NaiveServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    model.predict(np.zeros((1, *contract.STACK_SHAPE), np.uint8), verbose=0)  # build the predict function
    server.start()
    print(f"listening on 127.0.0.1:{bound}", file=sys.stderr, flush=True)
    server.wait_for_termination()
    return 0


def ceiling_server(port: int) -> int:
    """A grpc.aio AgentService that does no work: what gRPC in Python costs per call on this machine."""

    class NoWork(agent_pb2_grpc.AgentServiceServicer):
        async def GetAction(self, request, context):  # noqa: N802 (gRPC method name)
            stacks = len(contract.frames_from_bytes(request.frames))
            return agent_pb2.GetActionResponse(actions=[0] * stacks, model_version="no-work")

        async def StreamActions(self, request_iterator, context):  # noqa: N802
            async for request in request_iterator:
                stacks = len(contract.frames_from_bytes(request.frames))
                yield agent_pb2.GetActionResponse(actions=[0] * stacks, model_version="no-work")

        async def PlayGame(self, request_iterator, context):  # noqa: N802
            async for _frame in request_iterator:
                yield agent_pb2.GameAction(action=0, model_version="no-work")

    async def run() -> None:
        server = grpc.aio.server(options=CHANNEL_OPTIONS)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(NoWork(), server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"listening on 127.0.0.1:{bound}", file=sys.stderr, flush=True)
        await server.wait_for_termination()

    asyncio.run(run())
    return 0


# ----------------------------------------------------------------------------- models and processes
def prepare_models(directory: Path) -> tuple[Path, Path]:
    """An untrained dueling Q-network as .keras and its ONNX export (in a subprocess: TF stays out of here)."""
    keras_path, onnx_path = directory / "model.keras", directory / "model.onnx"
    code = (
        "import sys, keras, onnx\n"
        "from breakout_dqn.training.model import build_q_network, load_q_network\n"
        "from breakout_dqn.files import file_sha256\n"
        "from breakout_dqn.export.convert import contract_metadata, keras_to_onnx\n"
        "keras.utils.set_random_seed(0)\n"
        "build_q_network(dueling=True).save(sys.argv[1])\n"
        "proto = keras_to_onnx(load_q_network(sys.argv[1]), contract_metadata(file_sha256(sys.argv[1])))\n"
        "onnx.save(proto, sys.argv[2])\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(keras_path), str(onnx_path)], check=True, env=env,
                   capture_output=True, timeout=600)
    return keras_path, onnx_path


def start_server(command: list[str], log: Path, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start a server subprocess logging to ``log``; wait for ``listening on HOST:PORT``; return it and the target."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stderr=handle, stdout=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        match = re.search(r"listening on (\S+:\d+)", log.read_text())
        if match:
            return process, match.group(1)
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start: {' '.join(command)}\n{log.read_text()[-2000:]}")


def stop_server(process: subprocess.Popen, log: Path) -> None:
    """SIGTERM (a graceful drain), then print the server's batching counters if it logged them."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    pattern = (r"BatchStats\(requests=(\d+), stacks=(\d+), batches=(\d+), max_batch_stacks=(\d+), "
               r"dropped=\d+, inline=(\d+)")
    stats = re.search(pattern, log.read_text())
    if stats:
        requests, stacks, batches, largest, inline = map(int, stats.groups())
        print(f"  server: {requests} requests, {stacks} stacks in {batches} forward passes "
              f"({stacks / max(batches, 1):.1f} stacks per pass on average, largest {largest}; "
              f"{inline} single-request passes on the event loop)", flush=True)


def wait_ready(target: str, timeout: float = 120.0) -> None:
    """Until one GetAction succeeds (the naive server has no health service)."""
    deadline = time.monotonic() + timeout
    with AgentClient(target, timeout=30) as client:
        while True:
            try:
                client.get_action(np.zeros(contract.STACK_SHAPE, np.uint8))
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def preprocessing_alone(game: GameLoad, seconds: float = 1.0) -> dict:
    """What PlayGame adds per frame without gRPC: the checks and the stack building (batch 1 and 64)."""
    from breakout_dqn.serving.game import GameSession, build_stacks

    figures = {}
    first, later = game.frames()
    for batch in (1, 64):
        sessions = [GameSession() for _ in range(batch)]
        build_stacks([session.accept(first)[0] for session in sessions])
        frames, cpu = 0, time.process_time()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            build_stacks([session.accept(later)[0] for session in sessions])
            frames += batch
        figures[f"batch_{batch}"] = {"cpu_us_per_frame": (time.process_time() - cpu) / frames * 1e6}
        print(f"preprocessing alone (no gRPC), {game.describe()}, batch {batch:>2}: "
              f"{figures[f'batch_{batch}']['cpu_us_per_frame']:6.0f} us CPU per frame", flush=True)
    return figures


def preprocessing_beside_the_model(game: GameLoad, onnx_path: Path, seconds: float = 2.0) -> dict:
    """What preprocessing adds to a forward pass when the two run in turn, as the server runs them.

    For 1 session and for 64: the median time of (checks + stack building + forward pass) minus the
    median of the forward pass alone, interleaved. Each evicts the other's data from the caches,
    which a loop of preprocessing alone (``preprocessing_alone``) does not see.
    """
    from breakout_dqn.onnx_model import OnnxPolicy
    from breakout_dqn.serving.game import GameSession, build_stacks

    policy, figures = OnnxPolicy(onnx_path), {}
    first, later = game.frames()
    for batch in (1, 64):
        sessions = [GameSession() for _ in range(batch)]
        stacks = build_stacks([session.accept(first)[0] for session in sessions])
        both, alone, cpu_both, cpu_alone = [], [], [], []  # wall and CPU (all threads) seconds
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start, cpu_start = time.perf_counter(), time.process_time()
            policy.q_values(build_stacks([session.accept(later)[0] for session in sessions]))
            middle, cpu_middle = time.perf_counter(), time.process_time()
            policy.q_values(stacks)
            both.append(middle - start)
            alone.append(time.perf_counter() - middle)
            cpu_both.append(cpu_middle - cpu_start)
            cpu_alone.append(time.process_time() - cpu_middle)
        added_us = float(np.median(both) - np.median(alone)) / batch * 1e6
        added_cpu_us = float(np.mean(cpu_both) - np.mean(cpu_alone)) / batch * 1e6
        figures[f"batch_{batch}"] = {"added_us_per_frame": added_us, "added_cpu_us_per_frame": added_cpu_us,
                                     "with_ms": float(np.median(both)) * 1e3,
                                     "without_ms": float(np.median(alone)) * 1e3}
        print(f"preprocessing beside the forward pass, {game.describe()}, batch {batch:>2}: +{added_us:4.0f} us "
              f"per frame, +{added_cpu_us:4.0f} us CPU ({np.median(both) * 1e3:.2f} ms a pass with it, "
              f"{np.median(alone) * 1e3:.2f} ms without)", flush=True)
    return figures


def game_checks(ours: list[Row], ceiling: list[Row], preprocessing: dict, many: int) -> dict[str, tuple[bool, str]]:
    """PlayGame against StreamActions: slower by at most preprocessing + the larger messages' gRPC cost."""
    by = {(r.server, r.rpc, r.concurrency): r for r in ours + ceiling}
    checks = {}
    one, extra = by[("ours", "game", 1)], by[("no-work", "game", 1)].p50_ms - by[("no-work", "stream", 1)].p50_ms
    beside = preprocessing["beside_the_model"]
    added_ms = beside["batch_1"]["added_us_per_frame"] / 1e3
    allowed = by[("ours", "stream", 1)].p50_ms + added_ms + extra
    checks["PlayGame p50 at 1 session <= StreamActions p50 + preprocessing + gRPC's extra for the screens"] = (
        one.p50_ms <= allowed * 1.1, f"{one.p50_ms:.2f} ms (bound {allowed:.2f} ms + 10%; StreamActions "
        f"{by[('ours', 'stream', 1)].p50_ms:.2f} ms, preprocessing beside the forward pass {added_ms:.2f} ms "
        f"(alone {preprocessing['batch_1']['cpu_us_per_frame'] / 1e3:.2f}), screens' extra on the no-work server "
        f"{extra:.2f} ms)")
    games, streams = by[("ours", "game", many)], by[("ours", "stream", many)]
    no_work = by[("no-work", "game", many)], by[("no-work", "stream", many)]
    transport = no_work[0].server_cpu_us_per_action - no_work[1].server_cpu_us_per_action
    added = games.server_cpu_us_per_action - streams.server_cpu_us_per_action
    allowed_us = beside["batch_64"]["added_cpu_us_per_frame"] + transport
    checks[f"{many} PlayGame sessions cost the server at most preprocessing + gRPC's extra more CPU per action "
           f"than {many} StreamActions streams"] = (
        added <= allowed_us * 1.1, f"+{added:.0f} us per action (bound {allowed_us:.0f} + 10%: preprocessing beside "
        f"the forward pass {beside['batch_64']['added_cpu_us_per_frame']:.0f} (alone "
        f"{preprocessing['batch_64']['cpu_us_per_frame']:.0f}) + gRPC {transport:.0f}); {games.actions_per_s:.0f} "
        f"actions/s vs {streams.actions_per_s:.0f}")
    return checks


def onnxruntime_alone(onnx_path: Path, seconds: float = 1.0) -> dict:
    """The forward pass without gRPC, in this process, with the server's session options: the ceiling."""
    from breakout_dqn.onnx_model import OnnxPolicy

    policy = OnnxPolicy(onnx_path)
    figures = {}
    for batch in (1, 32):
        frames = np.frombuffer(payload(batch), np.uint8).reshape(batch, *contract.STACK_SHAPE)
        policy.q_values(frames)
        times = []
        cpu = time.process_time()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            policy.q_values(frames)
            times.append(time.perf_counter() - start)
        cpu_us_per_stack = (time.process_time() - cpu) / (len(times) * batch) * 1e6
        median = float(np.median(times))
        figures[f"batch_{batch}"] = {
            "p50_ms": median * 1e3,
            "stacks_per_s": batch / median,
            "cpu_us_per_stack": cpu_us_per_stack,
        }
        print(f"onnxruntime alone (no gRPC), batch {batch:>2}: {median * 1e3:6.2f} ms per pass, "
              f"{batch / median:6.0f} stacks/s", flush=True)
    # A server runs other work between passes: the same pass after 16 MB of other data went through the caches.
    sweep, times = np.ones(4_000_000, np.float32), []
    frames = np.frombuffer(payload(1), np.uint8).reshape(1, *contract.STACK_SHAPE)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sweep.sum()
        start = time.perf_counter()
        policy.q_values(frames)
        times.append(time.perf_counter() - start)
    figures["batch_1_cold"] = {"p50_ms": float(np.median(times)) * 1e3}
    print(f"onnxruntime alone (no gRPC), batch  1, caches swept before each pass: {np.median(times) * 1e3:6.2f} ms "
          "per pass", flush=True)
    return figures


# ----------------------------------------------------------------------------- report
def report(ours: list[Row], naive: list[Row], ceiling: list[Row], model_cpu_us: float, preprocessing: dict) -> dict:
    key = lambda r: (r.rpc, r.concurrency, r.stacks_per_request)  # noqa: E731
    many = max(r.concurrency for r in ours if r.rpc == "stream")  # 64 unless --concurrency said otherwise
    naive_by, ceiling_by = {key(r): r for r in naive}, {key(r): r for r in ceiling}
    print("\nloopback; actions/s = stacks answered per second (client and servers share the cores);")
    print("no-work = the same RPC on a server that does nothing (gRPC's own cost in Python)")
    print(f"{'rpc':>6} {'conc':>4} {'stacks':>6} | {'ours act/s':>10} {'p50 ms':>7} {'p99 ms':>7} | "
          f"{'no-work act/s':>13} {'ours/no-work':>12} | {'naive act/s':>11} {'p50 ms':>8} | {'speedup':>7}")
    for row in ours:
        top, base = ceiling_by.get(key(row)), naive_by.get(key(row))
        top_text = f"{top.actions_per_s:13.0f} {row.actions_per_s / top.actions_per_s:11.0%}" if top else \
            f"{'-':>13} {'-':>12}"
        base_text = f"{base.actions_per_s:11.0f} {base.p50_ms:8.2f}" if base else f"{'-':>11} {'-':>8}"
        speedup = f"{row.actions_per_s / base.actions_per_s:6.1f}x" if base else f"{'-':>7}"
        print(f"{row.rpc:>6} {row.concurrency:>4} {row.stacks_per_request:>6} | {row.actions_per_s:10.0f} "
              f"{row.p50_ms:7.2f} {row.p99_ms:7.2f} | {top_text} | {base_text} | {speedup}")

    def ours_at(rpc: str, concurrency: int, stacks: int = 1) -> Row:
        return next(r for r in ours if key(r) == (rpc, concurrency, stacks))

    def ceiling_note(rpc: str, concurrency: int) -> str:
        top = ceiling_by.get((rpc, concurrency, 1))
        if top is None:
            return ""
        if concurrency == 1:
            return f" (no-work server: {top.p50_ms:.2f} ms)"
        return f" (no-work server: {top.actions_per_s:.0f})"

    # What the machine can do at most with one stack per request: every action costs the model's
    # CPU (at its most efficient, batch 32) plus what gRPC costs the no-work server and the client.
    bounds = {}
    for rpc in ("unary", "stream"):
        top = ceiling_by.get((rpc, many, 1))
        if top is not None:
            per_action = model_cpu_us + top.server_cpu_us_per_action + top.client_cpu_us_per_action
            bounds[rpc] = (os.cpu_count() or 1) * 1e6 / per_action
            print(f"bound for {rpc} at concurrency {many}, 1 stack/request: {bounds[rpc]:.0f} actions/s = "
                  f"{os.cpu_count()} cores / ({model_cpu_us:.0f} us model + {top.server_cpu_us_per_action:.0f} us "
                  f"gRPC server + {top.client_cpu_us_per_action:.0f} us client CPU per action); ours reaches "
                  f"{ours_at(rpc, many).actions_per_s / bounds[rpc]:.0%} of it")

    best_unary = max((r for r in ours if r.rpc == "unary" and r.concurrency == many), key=lambda r: r.actions_per_s)
    # The comparison: one stack per request at concurrency 1, 8 and 64. (Rows with many stacks
    # per request let even model.predict amortize its overhead; they are printed above for reference.)
    speedups = [r.actions_per_s / naive_by[key(r)].actions_per_s
                for r in ours if r.stacks_per_request == 1 and key(r) in naive_by]
    checks = {}
    for rpc, name in (("unary", "GetAction"), ("stream", "StreamActions")):
        c1 = ours_at(rpc, 1)
        checks[f"{name} p50 at concurrency 1 <= {TARGET_P50_MS} ms"] = (
            c1.p50_ms <= TARGET_P50_MS, f"{c1.p50_ms:.2f} ms{ceiling_note(rpc, 1)}")
    for rpc, name in (("unary", "GetAction"), ("stream", "StreamActions")):
        loaded = ours_at(rpc, many)
        checks[f"{name} >= {TARGET_ACTIONS_PER_S:.0f} actions/s at concurrency {many}, 1 stack/request"] = (
            loaded.actions_per_s >= TARGET_ACTIONS_PER_S, f"{loaded.actions_per_s:.0f}{ceiling_note(rpc, many)}")
    checks[f"GetAction >= {TARGET_ACTIONS_PER_S:.0f} actions/s at concurrency {many}, best stacks/request"] = (
        best_unary.actions_per_s >= TARGET_ACTIONS_PER_S,
        f"{best_unary.actions_per_s:.0f} with {best_unary.stacks_per_request} stacks/request")
    checks.update(game_checks(ours, ceiling, preprocessing, many))
    if speedups:
        checks[f">= {TARGET_SPEEDUP:.0f}x the naive server's throughput (GetAction, concurrency 1, 8, 64; "
               "1 stack/request)"] = (min(speedups) >= TARGET_SPEEDUP,
                                      f"min {min(speedups):.0f}x, max {max(speedups):.0f}x")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print("targets:")
    for name, (passed, value) in checks.items():
        print(f"  [{'PASS' if passed else 'MISS'}] {name}: {value}")
    return {
        "ours": [dataclasses.asdict(r) for r in ours],
        "naive": [dataclasses.asdict(r) for r in naive],
        "no_work": [dataclasses.asdict(r) for r in ceiling],
        "bound_actions_per_s": bounds,
        "targets": {name: {"passed": passed, "value": value} for name, (passed, value) in checks.items()},
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, help="ONNX model for this server (default: build an untrained one)")
    parser.add_argument("--keras", type=Path, help="the same model as .keras for the naive server")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--batch-stacks", type=int, nargs="*", default=[4, 16, 32],
                        help="stacks per request for the extra concurrency-64 rows")
    parser.add_argument("--serve-args", default="", help="extra flags for `breakout-dqn serve`")
    parser.add_argument("--game-screens", type=int, default=2, choices=range(1, 5),
                        help="raw screens per PlayGame frame (play --raw sends the 2 the server uses)")
    parser.add_argument("--game-format", choices=("rgb", "grayscale"), default="rgb",
                        help="the PlayGame screens' format")
    parser.add_argument("--concurrency", type=int, default=64, help="callers for the concurrent rows")
    parser.add_argument("--skip-naive", action="store_true", help="measure this server (and the no-work one) only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--naive-server", type=Path, metavar="MODEL.keras", help=argparse.SUPPRESS)
    parser.add_argument("--ceiling-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_server:
        return naive_server(args.naive_server, args.port)
    if args.ceiling_server:
        return ceiling_server(args.port)

    many = args.concurrency
    unary = [("unary", 1, 1), ("unary", 8, 1), ("unary", many, 1), *(("unary", many, s) for s in args.batch_stacks)]
    stream = [("stream", 1, 1), ("stream", many, 1), ("game", 1, 1), ("game", many, 1)]
    game = GameLoad(args.game_screens, args.game_format == "rgb")
    with tempfile.TemporaryDirectory() as tmp:
        if args.onnx is None or (args.keras is None and not args.skip_naive):
            print("building an untrained Q-network (.keras + .onnx) for what was not given ...", flush=True)
            keras_path, onnx_path = prepare_models(Path(tmp))
            args.keras, args.onnx = args.keras or keras_path, args.onnx or onnx_path
        print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f} (other work on the machine "
              "competes for the same cores)", flush=True)
        model_alone = onnxruntime_alone(args.onnx)
        preprocessing = preprocessing_alone(game)
        preprocessing["beside_the_model"] = preprocessing_beside_the_model(game, args.onnx)

        serve = [sys.executable, "-m", "breakout_dqn.cli", "serve", "--model", str(args.onnx), "--port", "0",
                 *args.serve_args.split()]
        print(f"this server: {' '.join(serve[1:])}", flush=True)
        process, target = start_server(serve, Path(tmp) / "serve.log")
        try:
            AgentClient(target).wait_until_serving(60)
            ours = run_suite("ours", target, process.pid, args.duration, unary + stream, game)
        finally:
            stop_server(process, Path(tmp) / "serve.log")

        print("no-work server: the same RPCs answered without a model", flush=True)
        process, target = start_server([sys.executable, __file__, "--ceiling-server"], Path(tmp) / "no-work.log")
        try:
            wait_ready(target)
            ceiling = run_suite("no-work", target, process.pid, args.duration,
                                [("unary", 1, 1), ("unary", many, 1), *stream], game)
        finally:
            stop_server(process, Path(tmp) / "no-work.log")

        naive: list[Row] = []
        if not args.skip_naive:
            naive_command = [sys.executable, __file__, "--naive-server", str(args.keras)]
            print(f"naive server: Keras model.predict per request ({args.keras.name})", flush=True)
            process, target = start_server(naive_command, Path(tmp) / "naive.log")
            try:
                wait_ready(target)
                naive = run_suite("naive", target, process.pid, args.duration, unary)
            finally:
                stop_server(process, Path(tmp) / "naive.log")
    figures = report(ours, naive, ceiling, model_alone["batch_32"]["cpu_us_per_stack"], preprocessing)
    figures["onnxruntime_alone"] = model_alone
    figures["preprocessing_alone"] = {"load": game.describe(), **preprocessing}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
