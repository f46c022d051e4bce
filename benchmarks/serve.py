"""`persec serve` under load: requests/s and p50/p99 latency at 1, 4 and 16 concurrent
local clients (one image per request, over HTTP to a uvicorn server in this process),
against reading the same images in process in batches (`Recognizer.read`, what
`persec read` does), measured in the same run.

    python benchmarks/serve.py [--model DIR] [--images N] [--clients 1,4,16]

Prints a Markdown table; the last column is the server's images/s as a share of the
in-process batch throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn
from machine_info import cpu_model

from persec.image import decode_image
from persec.inference.details import DetailedReading
from persec.inference.model import load_model
from persec.serve.app import create_app
from persec.serve.config import ServeConfig
from persec.serve.worker import ModelProcess

DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "IIIT5K_train"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _load(url: str, blobs: list[bytes], clients: int) -> tuple[float, list[float]]:
    """Seconds for all requests and each request's latency."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:

        async def client(k: int) -> None:
            for i in range(k, len(blobs), clients):
                start = time.perf_counter()
                response = await http.post("/v1/read", files=[("images", ("w.png", blobs[i]))])
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
    return time.perf_counter() - start, latencies


def _canned(images: list) -> list[DetailedReading]:
    return [DetailedReading("word", 0.9, [0.9] * 4, [("word", 0.9)]) for _ in images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="saved model (default: the shipped one)")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--in-process", action="store_true", help="read in a server thread")
    parser.add_argument(
        "--http-only",
        action="store_true",
        help="answer canned readings without the model: what the HTTP path alone costs",
    )
    args = parser.parse_args()

    lines = (DEMO / "gt.txt").read_text().splitlines()[: args.images]
    paths = [DEMO / line.split("\t")[0] for line in lines]
    blobs = [p.read_bytes() for p in paths]
    model = load_model(args.model)
    images = [decode_image(b) for b in blobs]
    model.read(images[:64])  # warm up
    start = time.perf_counter()
    model.read(images, batch_size=32)
    inprocess = len(images) / (time.perf_counter() - start)

    port = _port()
    worker = None if args.in_process or args.http_only else ModelProcess(args.model, "cpu", 5)
    if args.http_only:
        worker = _canned
    app = create_app(model, ServeConfig(port=port, max_batch=32, max_wait_ms=5), worker)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    asyncio.run(_load(url, blobs[:32], 4))  # warm up

    print(
        f"{cpu_model('unknown CPU')}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    mode = "a model process"
    if args.in_process or args.http_only:
        mode = "no model (canned readings)" if args.http_only else "a thread of its own process"
    print(f"the server reads in {mode}")
    print(
        f"in process, batches of 32: {inprocess:.1f} images/s ({len(images)} IIIT5K_train crops)\n"
    )
    print("| clients | requests/s | p50 ms | p99 ms | mean batch | share of in-process |")
    print("|--:|--:|--:|--:|--:|--:|")
    batcher = app.state.batcher
    for clients in map(int, args.clients.split(",")):
        calls, items = batcher.calls, batcher.items
        seconds, latencies = asyncio.run(_load(url, blobs, clients))
        latencies.sort()
        rate = len(blobs) / seconds
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        mean_batch = (batcher.items - items) / max(1, batcher.calls - calls)
        print(
            f"| {clients} | {rate:.1f} | {1000 * statistics.median(latencies):.0f} | "
            f"{1000 * p99:.0f} | {mean_batch:.1f} | {rate / inprocess:.0%} |"
        )
    server.should_exit = True
    thread.join(timeout=10)
    if isinstance(worker, ModelProcess):
        worker.close()


if __name__ == "__main__":
    main()
