"""Ingest benchmarks: HTTP capture throughput and acknowledgement latency.

``python -m bench.ingest [--quick]`` prints and returns the medians of several runs and
writes them to ``bench/results/ingest.json``.

HTTP capture (:func:`bench_http_capture`): ``tripwire``'s capture app runs under uvicorn in
its own process (``--workers`` 1 by default) on a fresh workspace; a load generator in this
process posts batches of 100 Segment track events (≈ 300 bytes each, unique messageIds, so
nothing is deduplicated away) over keep-alive HTTP/1.1 connections on loopback.

- *throughput*: ``clients`` connections in a closed loop for ``duration`` seconds; events
  acknowledged (HTTP 200 = durable) per second.
- *latency*: an open-loop schedule at a fixed rate (half the 30,000 events/s target); each
  request's latency is measured from its scheduled send time (no coordinated omission).

The load generator shares the machine's cores with the server; it is a minimal asyncio
HTTP/1.1 client (pre-serialized bodies, one ``bytes.replace`` per request for the ids) so
that it takes as little CPU as possible from the server (≈ 0.15-0.2 ms per request, 5% of
the server's; its CPU-seconds are reported as ``client_cpu_s``). :func:`bench_capture_breakdown`
times the server's per-batch steps in isolation (JSON parsing, validation, buffer encoding,
one durable append) and :func:`bench_app_cpu` the capture app called in-process (through its
shortcut and through FastAPI's stack; whole process and event-loop thread), to say what
bounds the number: the HTTP figure minus the in-process one is uvicorn, httptools and the
sockets.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).parent / "results" / "ingest.json"
BATCH_EVENTS = 100
ID_PLACEHOLDER = b"@@@@@@@@@@@@"  # 12 bytes, replaced by a per-request hex counter


# -- the server under test ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(root: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    code = (
        "import sys\n"
        "from tripwire.store.workspace import Workspace\n"
        "from tripwire.web.server import serve\n"
        "serve(Workspace.load(sys.argv[1]), port=int(sys.argv[3]), workers=int(sys.argv[2]),\n"
        "      dashboard=False)\n"
    )
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(root), str(workers), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    started = running = 0
    while time.monotonic() < deadline:
        line = process.stderr.readline().decode().lower()
        started += "startup complete" in line
        running += "running on" in line
        if running and started >= workers:  # every worker has its app up, the socket listens
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, port
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("capture server did not start")


def _cpu_seconds(pid: int, *, main_threads: bool = False) -> float:
    """User + system CPU of process ``pid`` and its children (Linux ``/proc``; 0 elsewhere).

    ``main_threads``: only each process's main thread, i.e. a uvicorn worker's event loop
    (the rest of a worker's CPU is the buffer's writer and checkpoint threads).
    """
    total = 0.0
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        pids = [pid]
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        for one in pids:
            stat = Path(f"/proc/{one}/task/{one}/stat" if main_threads else f"/proc/{one}/stat")
            fields = stat.read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, ValueError):
        return 0.0
    return total


def _workspace(tmp: Path) -> tuple[Path, str]:
    from tripwire.store.keys import KeyStore
    from tripwire.store.workspace import init_workspace

    workspace = init_workspace(tmp / "ws")
    with KeyStore.for_workspace(workspace) as keys:
        return workspace.root, keys.create("bench").secret


# -- the load generator ---------------------------------------------------------------------


def batch_body(events: int = BATCH_EVENTS) -> bytes:
    """A Segment /v1/batch body whose messageIds contain :data:`ID_PLACEHOLDER`."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    batch = [
        {
            "type": "track",
            "event": "Turn Completed",
            "userId": f"user-{i}",
            "messageId": f"{ID_PLACEHOLDER.decode()}-{i:03d}",
            "timestamp": now,
            "properties": {
                "session_id": f"s-{i}",
                "turn_index": i,
                "intent": "product_search",
                "resolved": True,
                "latency_ms": 412.5,
            },
            "context": {
                "locale": "en-US",
                "device": {"model": "Echo Show"},
                "app": {"version": "5.12.0"},
            },
        }
        for i in range(events)
    ]
    return orjson.dumps({"batch": batch, "sentAt": now})


class _Connection:
    """One keep-alive HTTP/1.1 connection posting batches."""

    def __init__(self, port: int, key: str, body: bytes) -> None:
        self.port = port
        auth = base64.b64encode(f"{key}:".encode()).decode()
        self.head = (
            f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.body = body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, request_id: int) -> int:
        assert self.reader is not None and self.writer is not None
        request = self.head + self.body.replace(ID_PLACEHOLDER, b"%012x" % request_id)
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            # The server closed the idle keep-alive connection (uvicorn's 5 s timeout, which
            # a stalled load generator on a busy machine can exceed): reconnect and resend.
            self.close()
            await self.open()
            assert self.reader is not None and self.writer is not None
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
        # One read for the status line and headers, one for the body (keep-alive framing).
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at + 2)
            await self.reader.readexactly(int(head[at + 17 : end]))
        return int(head[9:12])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _throughput(
    port: int, key: str, body: bytes, clients: int, duration: float, start_id: int
) -> dict[str, float]:
    connections = [_Connection(port, key, body) for _ in range(clients)]
    for connection in connections:
        await connection.open()
    counter = iter(range(start_id, 10**12))
    acked = failed = 0
    stop_at = time.perf_counter() + duration

    async def worker(connection: _Connection) -> None:
        nonlocal acked, failed
        while time.perf_counter() < stop_at:
            if await connection.post(next(counter)) == 200:
                acked += 1
            else:
                failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return {
        "events_per_s": acked * BATCH_EVENTS / elapsed,
        "requests": acked + failed,
        "failed_requests": failed,
    }


async def _latency(
    port: int,
    key: str,
    body: bytes,
    rate_events: float,
    duration: float,
    clients: int,
    start_id: int,
) -> dict[str, float]:
    interval = BATCH_EVENTS / rate_events
    total = int(duration / interval)
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(clients):
        connection = _Connection(port, key, body)
        await connection.open()
        pool.put_nowait(connection)
    latencies: list[float] = []
    late: list[float] = []  # the load generator's own delay: woken after the scheduled time
    waits: list[float] = []  # waiting for a free connection (all `clients` busy)
    round_trips: list[float] = []  # request written to response read: the server's share
    statuses: list[int] = []
    origin = time.perf_counter() + 0.05

    async def one(index: int) -> None:
        scheduled = origin + index * interval
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        woke = time.perf_counter()
        connection = await pool.get()
        sent = time.perf_counter()
        try:
            statuses.append(await connection.post(start_id + index))
        finally:
            pool.put_nowait(connection)
        done = time.perf_counter()
        latencies.append(done - scheduled)
        late.append(woke - scheduled)
        waits.append(sent - woke)
        round_trips.append(done - sent)

    await asyncio.gather(*(one(i) for i in range(total)))
    while not pool.empty():
        pool.get_nowait().close()
    return {
        "rate_events_per_s": rate_events,
        "p50_ms": _percentile_ms(latencies, 0.50),
        "p90_ms": _percentile_ms(latencies, 0.90),
        "p99_ms": _percentile_ms(latencies, 0.99),
        "max_ms": _percentile_ms(latencies, 1.0),
        # Where the tail comes from (each its own p99, so they need not add up):
        "round_trip_p50_ms": _percentile_ms(round_trips, 0.50),
        "round_trip_p99_ms": _percentile_ms(round_trips, 0.99),
        "connection_wait_p99_ms": _percentile_ms(waits, 0.99),
        "generator_late_p99_ms": _percentile_ms(late, 0.99),
        "non_200": sum(1 for s in statuses if s != 200),
    }


def _percentile_ms(values: list[float], share: float) -> float:
    """The ``share`` quantile of ``values`` (seconds) in ms (nearest rank below)."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _run(coroutine: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def bench_http_capture(
    *,
    runs: int = 3,
    duration: float = 5.0,
    clients: int = 8,
    workers: int = 1,
    latency_rate: float = 15_000.0,
) -> dict[str, Any]:
    """Median throughput and latency of HTTP capture over ``runs`` fresh servers."""
    body = batch_body()
    throughputs: list[dict[str, float]] = []
    latencies: list[dict[str, float]] = []
    # The load generator's own collector pauses would count as acknowledgement latency:
    # everything imported so far is frozen (never walked again).
    gc.collect()
    gc.freeze()
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            root, key = _workspace(Path(tmp))
            process, port = _start_server(root, workers)
            try:
                _run(_throughput(port, key, body, clients, 1.0, 10**9))  # warm up
                cpu_before = _cpu_seconds(process.pid)
                loop_before = _cpu_seconds(process.pid, main_threads=True)
                client_before = time.process_time()
                base = (run + 1) * 10**10
                measured = _run(_throughput(port, key, body, clients, duration, base))
                client_cpu = time.process_time() - client_before
                cpu = _cpu_seconds(process.pid) - cpu_before
                loop_cpu = _cpu_seconds(process.pid, main_threads=True) - loop_before
                # the event loops' share; the rest is the buffer's writer and checkpoints
                measured["server_loop_cpu_ms_per_request"] = (
                    1000 * loop_cpu / max(1, measured["requests"])
                )
                measured["client_cpu_ms_per_request"] = (
                    1000 * client_cpu / max(1, measured["requests"])
                )
                measured["client_cpu_s"] = client_cpu
                measured["server_cpu_ms_per_request"] = 1000 * cpu / max(1, measured["requests"])
                measured["server_cores_busy"] = cpu / duration
                throughputs.append(measured)
                target = _latency(port, key, body, latency_rate, duration, clients, base + 10**9)
                latencies.append(_run(target))
                half = measured["events_per_s"] / 2
                at_half = _latency(port, key, body, half, duration, clients, base + 2 * 10**9)
                latencies[-1]["p99_ms_at_half_measured"] = _run(at_half)["p99_ms"]
                latencies[-1]["half_measured_rate"] = half
            finally:
                process.terminate()
                process.wait(timeout=30)
            print(
                f"   run {run + 1}: {throughputs[-1]['events_per_s']:,.0f} events/s"
                f" (server CPU {throughputs[-1]['server_cpu_ms_per_request']:.1f} ms/request,"
                f" {throughputs[-1]['server_loop_cpu_ms_per_request']:.1f} of it on the event"
                " loop,"
                f" {throughputs[-1]['server_cores_busy']:.2f} cores busy; load generator"
                f" {throughputs[-1]['client_cpu_ms_per_request']:.2f} ms/request);"
                f" at {latency_rate:,.0f}/s p50 {latencies[-1]['p50_ms']:.1f} ms"
                f" p90 {latencies[-1]['p90_ms']:.1f} ms p99 {latencies[-1]['p99_ms']:.1f} ms"
                f" max {latencies[-1]['max_ms']:.1f} ms (p99 of the round trip"
                f" {latencies[-1]['round_trip_p99_ms']:.1f} ms, of waiting for one of the"
                f" {clients} connections {latencies[-1]['connection_wait_p99_ms']:.1f} ms, of"
                f" the generator's late wake-ups {latencies[-1]['generator_late_p99_ms']:.1f} ms);"
                f" at {latencies[-1]['half_measured_rate']:,.0f}/s (half the measured maximum)"
                f" p99 {latencies[-1]['p99_ms_at_half_measured']:.1f} ms",
                flush=True,
            )
    return {
        "batch_events": BATCH_EVENTS,
        "batch_bytes": len(body),
        "clients": clients,
        "workers": workers,
        "runs": runs,
        "throughput_events_per_s_median": statistics.median(t["events_per_s"] for t in throughputs),
        "failed_requests": sum(t["failed_requests"] for t in throughputs),
        "latency_rate_events_per_s": latency_rate,
        "p50_ms_median": statistics.median(x["p50_ms"] for x in latencies),
        "p90_ms_median": statistics.median(x["p90_ms"] for x in latencies),
        "p99_ms_median": statistics.median(x["p99_ms"] for x in latencies),
        "max_ms_median": statistics.median(x["max_ms"] for x in latencies),
        **{
            f"{name}_median": statistics.median(x[name] for x in latencies)
            for name in (
                "round_trip_p50_ms",
                "round_trip_p99_ms",
                "connection_wait_p99_ms",
                "generator_late_p99_ms",
            )
        },
        "p99_ms_at_half_measured_median": statistics.median(
            x["p99_ms_at_half_measured"] for x in latencies
        ),
        "server_cpu_ms_per_request_median": statistics.median(
            t["server_cpu_ms_per_request"] for t in throughputs
        ),
        "server_loop_cpu_ms_per_request_median": statistics.median(
            t["server_loop_cpu_ms_per_request"] for t in throughputs
        ),
        "server_cores_busy_median": statistics.median(t["server_cores_busy"] for t in throughputs),
        # What one fully available core sustains (CPU-bound; the machine is shared):
        "events_per_server_cpu_second_median": statistics.median(
            1000 * BATCH_EVENTS / t["server_cpu_ms_per_request"] for t in throughputs
        ),
        "load_average_1min": os.getloadavg()[0],
        "client_cpu_ms_per_request_median": statistics.median(
            t["client_cpu_ms_per_request"] for t in throughputs
        ),
        # The load generator's CPU-seconds over the throughput window (it shares the cores):
        "client_cpu_s_median": statistics.median(t["client_cpu_s"] for t in throughputs),
        "duration_s": duration,
        "non_200_at_rate": sum(x["non_200"] for x in latencies),
    }


def bench_capture_breakdown(*, repeats: int = 200) -> dict[str, float]:
    """CPU per 100-event batch of each server step, and one durable append, in isolation."""
    from tripwire.events.columns import normalize_batch
    from tripwire.store.buffer import Buffer

    body = batch_body().replace(ID_PLACEHOLDER, b"000000000000")

    def per_call(fn: Callable[[], object]) -> float:
        samples = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(repeats):
                fn()
            samples.append((time.process_time() - started) / repeats)
        return 1e6 * statistics.median(samples)

    parsed = orjson.loads(body)
    now = datetime.now(UTC)

    def validate() -> Any:
        return normalize_batch(
            parsed["batch"], received_at=now, source="bench", sent_at=parsed["sentAt"]
        )

    result = {
        "json_parse_us_per_batch": per_call(lambda: orjson.loads(body)),
        "validate_to_columns_us_per_batch": per_call(validate),
    }
    with tempfile.TemporaryDirectory() as tmp, Buffer(Path(tmp) / "buffer.db") as buffer:
        samples = []
        cpu_samples = []  # process CPU: the writer thread's work and the fsync's system time
        for n in range(50):
            batch = [{**e, "messageId": f"{n}-{i}"} for i, e in enumerate(parsed["batch"])]
            columns, _ = normalize_batch(
                batch, received_at=now, source="bench", sent_at=parsed["sentAt"]
            )
            started, cpu = time.perf_counter(), time.process_time()
            buffer.append_batch(columns)
            samples.append(time.perf_counter() - started)
            cpu_samples.append(time.process_time() - cpu)
        result["durable_append_ms_per_batch"] = 1000 * statistics.median(samples)
        result["durable_append_cpu_ms_per_batch"] = 1000 * statistics.median(cpu_samples)
    return result


def _asgi_post(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    """One ASGI ``POST`` to ``app`` in this process (no HTTP); returns the status."""

    async def call() -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
            "state": {},
        }
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # a client that stays connected
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(sent[0]["status"])

    return call()


def bench_app_cpu(*, requests: int = 600, concurrency: int = 8) -> dict[str, float]:
    """CPU per 100-event ``/v1/batch`` request of the capture app called in this process
    (ASGI, no HTTP): the whole process (event loop + buffer writer thread) and the event
    loop's thread alone, through the app's shortcut and through FastAPI's ordinary stack.

    Subtracted from the HTTP benchmark's server CPU, the shortcut's figure leaves what
    uvicorn, httptools and the sockets cost; the two paths' difference is FastAPI's
    middleware stack and router.
    """
    from fastapi import FastAPI

    from tripwire.ingest.app import create_app
    from tripwire.store.buffer import Buffer
    from tripwire.store.keys import KeyStore
    from tripwire.store.workspace import init_workspace

    body = batch_body()
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workspace = init_workspace(Path(tmp) / "ws")
        with Buffer.for_workspace(workspace) as buffer, KeyStore.for_workspace(workspace) as keys:
            auth = base64.b64encode(f"{keys.create('bench').secret}:".encode())
            headers = [(b"authorization", b"Basic " + auth), (b"content-type", b"application/json")]
            app = create_app(workspace, buffer=buffer, keys=keys)
            counter = iter(range(10**12))
            gc.collect()
            gc.freeze()

            async def drive(handler: Any, count: int) -> tuple[float, float]:
                semaphore = asyncio.Semaphore(concurrency)

                async def one() -> None:
                    async with semaphore:
                        request = body.replace(ID_PLACEHOLDER, b"%012x" % next(counter))
                        assert await _asgi_post(handler, "/v1/batch", headers, request) == 200

                cpu, thread = time.process_time(), time.thread_time()
                await asyncio.gather(*(one() for _ in range(count)))
                return time.process_time() - cpu, time.thread_time() - thread

            paths = {"shortcut": app, "fastapi_stack": lambda *a: FastAPI.__call__(app, *a)}
            for name, handler in paths.items():
                _run(drive(handler, max(1, requests // 4)))  # warm up
                samples = [_run(drive(handler, requests)) for _ in range(3)]
                cpu, thread = (statistics.median(x) for x in zip(*samples, strict=True))
                result[f"app_{name}_cpu_ms_per_request"] = 1000 * cpu / requests
                result[f"app_{name}_loop_thread_cpu_ms_per_request"] = 1000 * thread / requests
            gc.unfreeze()
    return result


def _save(section: str, values: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[section] = {
        **values,
        "cores": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.write_text(json.dumps(data, indent=1, sort_keys=True))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in argv
    results: dict[str, Any] = {}
    print("   capture breakdown (CPU per 100-event batch)", flush=True)
    results["capture_breakdown"] = bench_capture_breakdown(repeats=20 if quick else 200)
    results["capture_breakdown"].update(bench_app_cpu(requests=100 if quick else 600))
    for name, value in results["capture_breakdown"].items():
        print(f"     {name}: {value:,.1f}")
    for workers in (1, 2):
        section = "http_capture" if workers == 1 else f"http_capture_{workers}_workers"
        print(
            f"   HTTP capture (uvicorn, {workers} worker{'s' if workers > 1 else ''})", flush=True
        )
        results[section] = capture = bench_http_capture(
            runs=1 if quick else 3, duration=1.0 if quick else 5.0, workers=workers
        )
        print(
            f"   median: {capture['throughput_events_per_s_median']:,.0f} events/s"
            f" (target ≥ 30,000); p99 at {capture['latency_rate_events_per_s']:,.0f}/s:"
            f" {capture['p99_ms_median']:.1f} ms (target ≤ 25 ms); p99 at half the measured"
            f" maximum: {capture['p99_ms_at_half_measured_median']:.1f} ms; server CPU"
            f" {capture['server_cpu_ms_per_request_median']:.1f} ms per 100-event request"
            f" (= {capture['events_per_server_cpu_second_median']:,.0f} events per server"
            f" CPU-second; load average {capture['load_average_1min']:.1f})",
            flush=True,
        )
    if not quick:
        for section, values in results.items():
            _save(section, values)
    results.update(main_store(quick))
    return results


# -- in-process API and archiver (store area) ------------------------------------------------


def _world_message(i: int, day: int) -> dict[str, Any]:
    """A raw Segment track message shaped like the synthetic world's (≈ 700 bytes normalized)."""
    return {
        "type": "track",
        "event": ("Turn Completed", "Voice Utterance", "Cart Updated", "NLU Completed")[i % 4],
        "userId": f"user-{i % 50_000}",
        "messageId": f"bench-{day}-{i:09d}",
        "timestamp": f"2026-11-{1 + day % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i // 60) % 60:02d}.{i % 1000:03d}Z",
        "properties": {
            "session_id": f"s-{i // 12}",
            "turn_index": i % 12,
            "intent": "product_search",
            "resolved": i % 3 != 0,
            "escalated": i % 17 == 0,
            "cache_hit": i % 2 == 0,
            "latency_ms": 180.0 + i % 900,
            "service": f"retrieval-shard-{i % 8}",
        },
        "context": {
            "locale": ("en-US", "en-GB", "de-DE", "ja-JP")[i % 4],
            "device": {"model": ("Echo Dot", "Echo Show", "Fire TV", "mobile app")[i % 4]},
            "app": {"version": "5.12.0"},
            "os": {"name": "Fire OS"},
            "traits": {
                "tenure": "established",
                "prime": i % 2 == 0,
                "payment_method": "credit-card",
            },
        },
    }


def _prefilled_workspace(root: Path, keys: int) -> Path:
    """A workspace whose buffer already holds ``keys`` random-UUID events (all inside the
    dedupe window): what a capture buffer looks like after days of real SDK traffic."""
    import tripwire
    from tripwire.store.workspace import init_workspace

    workspace = init_workspace(root)
    with tripwire.open(workspace.root) as tw:
        for start in range(0, keys, 20_000):
            size = min(20_000, keys - start)
            tw.track_many(
                [
                    {
                        "type": "track",
                        "event": "Prefill",
                        "userId": "u",
                        "messageId": str(uuid.uuid4()),
                    }
                    for _ in range(size)
                ]
            )
        tw.flush()
    return workspace.root


def bench_inprocess_track(
    *,
    runs: int = 3,
    events: int = 200_000,
    batch: int = 10_000,
    random_ids: bool = False,
    prefill: int = 0,
) -> dict[str, Any]:
    """Median events/s of ``tw.track_many`` (validation included) + ``tw.flush()`` (durable).

    ``random_ids`` gives every message a random UUID messageId (what SDKs send) instead of a
    sequential one; ``prefill`` starts each run from a buffer already holding that many
    random-UUID keys (one event is sent and flushed before the timer starts, so the writer's
    dedupe index load is timed apart: ``index_load_cpu_s``). Also times the steps alone on
    one batch (CPU per event): what ``track_many`` runs on these plain, valid batches
    (:func:`tripwire.events.plain_batch.normalize_plain_batch`, Arrow batch built:
    ``plain_batch_us_per_event``), the column-wise validation it falls back to for any
    other batch (:func:`tripwire.events.columns.normalize_batch`, columns not yet built:
    ``validate_to_columns_us_per_event``) and the durable append of that batch
    (IPC + LZ4 segment, dedupe block, one fsync per group). The calling thread's CPU per
    event (validation: Python under the GIL, which the buffer's writer thread shares) and the
    wall from the last ``track_many`` to durable (the writer's backlog) say what bounds it.
    """
    import tripwire
    from tripwire.events.columns import normalize_batch
    from tripwire.events.plain_batch import normalize_plain_batch
    from tripwire.store.buffer import Buffer
    from tripwire.store.workspace import init_workspace

    rates: list[float] = []
    cpu_rates: list[float] = []  # events per CPU-second of this process (all its threads)
    index_load: list[float] = []
    caller_us: list[float] = []  # CPU of the calling thread (validation, under the GIL)
    flush_tail: list[float] = []  # wall from the last track_many's return to durable
    with tempfile.TemporaryDirectory() as template_dir:
        template = _prefilled_workspace(Path(template_dir) / "ws", prefill) if prefill else None
        for run in range(runs):
            messages = [_world_message(i, run) for i in range(events)]
            if random_ids:
                for message in messages:
                    message["messageId"] = str(uuid.uuid4())
            with tempfile.TemporaryDirectory() as tmp:
                if template is not None:
                    root = Path(tmp) / "ws"
                    shutil.copytree(template, root)
                else:
                    root = init_workspace(Path(tmp) / "ws").root
                with tripwire.open(root) as tw:
                    if template is not None:
                        cpu = time.process_time()
                        tw.track("Warm", user_id="u")
                        tw.flush()
                        index_load.append(time.process_time() - cpu)
                    started, cpu = time.perf_counter(), time.process_time()
                    caller = time.thread_time()
                    for start in range(0, events, batch):
                        assert not tw.track_many(messages[start : start + batch]).rejected
                    caller_us.append(1e6 * (time.thread_time() - caller) / events)
                    validated = time.perf_counter() - started
                    flushed = tw.flush()
                    elapsed = time.perf_counter() - started
                    flush_tail.append(elapsed - validated)
                    cpu_rates.append(events / (time.process_time() - cpu))
                warm = 1 if template is not None else 0  # the one event that loaded the index
                assert flushed.stored == events + warm, flushed
            rates.append(events / elapsed)
            print(
                f"   in-process run {run + 1}: {rates[-1]:,.0f} events/s (durable);"
                f" {cpu_rates[-1]:,.0f} events per CPU-second; calling thread"
                f" {caller_us[-1]:.2f} CPU-µs per event; flush after the last call"
                f" {1000 * flush_tail[-1]:.0f} ms",
                flush=True,
            )

    sample = [_world_message(i, 99) for i in range(batch)]
    now = datetime.now(UTC)
    started = time.process_time()
    columns, _ = normalize_batch(sample, received_at=now, source="bench")
    validate_us = 1e6 * (time.process_time() - started) / batch
    started = time.process_time()
    plain = normalize_plain_batch(sample, received_at=now, source="bench", max_event_bytes=32_768)
    plain_us = 1e6 * (time.process_time() - started) / batch
    assert plain is not None  # track_many's path for these messages
    with tempfile.TemporaryDirectory() as tmp, Buffer(Path(tmp) / "buffer.db") as buffer:
        started, cpu = time.perf_counter(), time.process_time()
        buffer.append_batch(columns)
        append_us = 1e6 * (time.perf_counter() - started) / batch
        append_cpu_us = 1e6 * (time.process_time() - cpu) / batch
    return {
        "events": events,
        "batch": batch,
        "runs": runs,
        "random_ids": random_ids,
        "prefilled_keys": prefill,
        "index_load_cpu_s": statistics.median(index_load) if index_load else None,
        "events_per_s_median": statistics.median(rates),
        "events_per_cpu_s_median": statistics.median(cpu_rates),
        "caller_thread_cpu_us_per_event": statistics.median(caller_us),
        "flush_tail_ms_median": 1000 * statistics.median(flush_tail),
        "load_average_1min": os.getloadavg()[0],
        "validate_to_columns_us_per_event": validate_us,
        "plain_batch_us_per_event": plain_us,
        "durable_append_us_per_event": append_us,
        "durable_append_cpu_us_per_event": append_cpu_us,
    }


def main_store(quick: bool) -> dict[str, Any]:
    """The store-area measurements (called from :func:`main`)."""
    results: dict[str, Any] = {}
    print("   in-process track_many + flush (durable)", flush=True)
    results["inprocess_track"] = bench_inprocess_track(
        runs=1 if quick else 3, events=20_000 if quick else 200_000
    )
    print(
        f"   in-process median: {results['inprocess_track']['events_per_s_median']:,.0f} events/s (target ≥ 200,000)"
    )
    print(
        "   the same with random UUID messageIds, 1 M random keys already in the window", flush=True
    )
    results["inprocess_track_uuid_1m"] = bench_inprocess_track(
        runs=1 if quick else 3,
        events=20_000 if quick else 200_000,
        random_ids=True,
        prefill=20_000 if quick else 1_000_000,
    )
    print(
        f"   in-process, random UUIDs after 1 M keys: "
        f"{results['inprocess_track_uuid_1m']['events_per_s_median']:,.0f} events/s"
    )
    # the archiver (buffer → Parquet) has its own module: bench/archiver.py
    for section in ("inprocess_track", "inprocess_track_uuid_1m"):
        for name, value in results[section].items():
            if name.endswith("_us_per_event"):
                print(f"     {section}.{name}: {value:,.2f}")
    if not quick:
        for section, values in results.items():
            _save(section, values)
    return results


if __name__ == "__main__":
    main()
