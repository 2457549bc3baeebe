"""A bounded load test of ``seqtag serve`` on this machine: throughput, latency and errors.

Sentences of a CoNLL file are turned back into raw text (as ``scripts/tokenizer_agreement.py`` does: punctuation
glued the way text writes it) and sent as ``{"text": ...}`` requests to ``POST /predict`` by ``--clients``
concurrent clients, each on one kept-alive connection, until ``--requests`` have been answered or ``--max-seconds``
have passed. It prints requests/s, sentences/s (sentence records answered), p50/p90/p99 latency and the errors
(non-200 answers and failed connections), and how much CPU the client itself took: on a small machine the client
competes with the server for the same cores.

Only a server on this machine is load-tested: a URL whose host is not 127.0.0.1, localhost or ::1 is refused.
With ``--model`` the script starts ``seqtag serve`` itself on a free port and stops it at the end:

    python scripts/load_test.py --model /path/to/best.ckpt --data ../shared/data/conll2003/eng.testb
    python scripts/load_test.py --url http://127.0.0.1:8000 --data ../shared/data/conll2003/eng.testb
    python scripts/load_test.py --model best.ckpt --data eng.testb --serve-args="--max-batch-size 1"
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from tokenizer_agreement import raw_text

from seqtag.data.readers import read_conll

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def local_address(url: str) -> tuple[str, int]:
    """Host and port of ``url``, which must point at this machine."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in LOCAL_HOSTS:
        raise SystemExit(f"load_test: refusing {url!r}: only a server on this machine ({', '.join(LOCAL_HOSTS)})")
    return parts.hostname, parts.port or 80


def start_server(model: str, serve_args: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``seqtag serve`` on a free port of 127.0.0.1, in its own process group; returns it once /health says 200."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "seqtag.cli", "serve", "--model", model, "--port", str(port)]
    command += shlex.split(serve_args)
    log = tempfile.TemporaryFile()  # a file, not a pipe: a server that logs much would block on a full pipe
    server = subprocess.Popen(command, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"load_test: seqtag serve exited:\n{log.read().decode()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return server, f"http://127.0.0.1:{port}"
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise SystemExit(f"load_test: seqtag serve did not answer /health within {timeout:.0f} s")


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (it shuts its workers down), SIGKILL if it lingers."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    except ProcessLookupError:
        pass


def run_load(
    host: str, port: int, bodies: list[bytes], requests: int, clients: int, max_seconds: float
) -> tuple[list[float], int, int, float]:
    """Sends ``requests`` bodies (cycling through ``bodies``) from ``clients`` threads.

    Returns the latencies of the answered requests (s), the sentences answered, the errors and the wall time.
    """
    counter, lock = itertools.count(), threading.Lock()
    latencies: list[float] = []
    totals = {"sentences": 0, "errors": 0}
    deadline = time.monotonic() + max_seconds
    headers = {"Content-Type": "application/json"}

    def client() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        mine, sentences, errors = [], 0, 0
        while time.monotonic() < deadline:
            with lock:
                i = next(counter)
            if i >= requests:
                break
            start = time.perf_counter()
            try:
                connection.request("POST", "/predict", bodies[i % len(bodies)], headers)
                answer = connection.getresponse()
                payload = answer.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=60)
                continue
            if answer.status != 200:
                errors += 1
                continue
            mine.append(time.perf_counter() - start)
            sentences += len(json.loads(payload)["sentences"])
        connection.close()
        with lock:
            latencies.extend(mine)
            totals["sentences"] += sentences
            totals["errors"] += errors

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, totals["sentences"], totals["errors"], time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a CoNLL file whose sentences are sent as raw text")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server on this machine, e.g. http://127.0.0.1:8000")
    target.add_argument("--model", help="a checkpoint: start seqtag serve on it for the test, stop it after")
    parser.add_argument("--serve-args", default="", help="more options of seqtag serve (with --model)")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sentences-per-request", type=int, default=1, help="sentences joined into one text")
    parser.add_argument("--warmup", type=int, default=50, help="requests sent first and not counted")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop sending after this long")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.url:
        local_address(args.url)
    if not Path(args.data).is_file():
        raise SystemExit(f"load_test: {args.data}: no such file (the CoNLL-2003 data is in ../shared/data)")
    texts = [raw_text(sentence["tokens"]) for sentence in read_conll(args.data)]
    k = args.sentences_per_request
    bodies = [json.dumps({"text": " ".join(texts[i : i + k])}).encode() for i in range(0, len(texts), k)]

    server = None
    if args.model:
        server, url = start_server(args.model, args.serve_args)
    else:
        url = args.url
    try:
        host, port = local_address(url)
        run_load(host, port, bodies, args.warmup, min(args.clients, args.warmup), args.max_seconds)
        cpu_before = os.times()
        latencies, sentences, errors, wall = run_load(host, port, bodies, args.requests, args.clients, args.max_seconds)
        cpu = sum(os.times()[:2]) - sum(cpu_before[:2])
    finally:
        if server is not None:
            stop_server(server)
    figures = {
        "requests": len(latencies) + errors,
        "answered": len(latencies),
        "errors": errors,
        "clients": args.clients,
        "sentences_per_request": k,
        "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "sentences_per_s": round(sentences / wall, 1),
        "latency_ms": {
            q: round(1000 * percentile(latencies, p), 1) for q, p in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]
        },
        "client_cpu_s": round(cpu, 1),
        "serve_args": args.serve_args,
    }
    print(
        f"{figures['answered']} requests answered, {errors} errors, in {wall:.1f} s with {args.clients} clients: "
        f"{figures['requests_per_s']} requests/s, {figures['sentences_per_s']} sentences/s; latency p50 "
        f"{figures['latency_ms']['p50']} ms, p90 {figures['latency_ms']['p90']} ms, p99 {figures['latency_ms']['p99']} "
        f"ms; the client took {cpu:.1f} s of CPU ({cpu / wall:.0%} of one core)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
