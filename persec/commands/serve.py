"""``persec serve``: a local web page and HTTP API that read images (:mod:`persec.serve`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from persec.commands.options import add_command, add_model_argument, positive_int
from persec.hub import default_model_dir

HELP = "serve a web page and an HTTP API that read images"
DEMO_EXAMPLES = Path("../shared/data/real_demo")

EPILOG = f"""\
Open http://HOST:PORT/ for the page: drop, choose or paste images, or click an example.
The API:

  curl -F images=@word.png -F images=@other.jpg http://127.0.0.1:7860/v1/read
  curl http://127.0.0.1:7860/v1/health
  curl http://127.0.0.1:7860/v1/model
  curl http://127.0.0.1:7860/openapi.json

POST /v1/read also takes JSON {{"images": ["<base64>", ...]}}. Requests that arrive together
share model calls (up to --max-batch images, each waiting at most --max-wait-ms). Bad
input (not an image, truncated, over the pixel or size limits, too many files, a wrong
field name) gets a 4xx with a JSON error; the server keeps serving. It binds to
127.0.0.1 unless --host says otherwise, and fetches nothing from the network.
Without --model, the shipped model at {default_model_dir()} is used; the examples
default to {DEMO_EXAMPLES} when that folder exists.
"""


def add_parser(subparsers) -> None:
    """Register ``serve`` on the ``persec`` subcommand parser."""
    parser = add_command(subparsers, "serve", HELP, EPILOG)
    add_model_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=positive_int, default=7860, help="(default: 7860)")
    parser.add_argument("--examples", metavar="DIR", help="example images the page offers")
    parser.add_argument(
        "--codes",
        metavar="PRETRAIN_DIR",
        help="a PerSec pretraining output: the page also draws its quantizer codes per image",
    )
    parser.add_argument("--max-batch", type=positive_int, default=32, metavar="N")
    parser.add_argument("--max-wait-ms", type=_milliseconds, default=5.0, metavar="MS")
    parser.add_argument("--max-files", type=positive_int, default=16, metavar="N")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="read in a thread of the server's process (default: a model process of its own)",
    )
    parser.set_defaults(func=run)


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected milliseconds >= 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Load the model and serve until interrupted."""
    import uvicorn

    from persec.inference.model import load_model, resolve_device
    from persec.serve.app import create_app
    from persec.serve.config import ServeConfig
    from persec.serve.worker import ModelProcess

    examples = args.examples
    if examples is None and DEMO_EXAMPLES.is_dir():
        examples = str(DEMO_EXAMPLES)
    config = ServeConfig(
        host=args.host,
        port=args.port,
        max_files=args.max_files,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        examples=examples or "",
        codes=args.codes or "",
    )
    device = resolve_device(args.device)
    model = load_model(args.model, "cpu")  # preprocessing and the model's description
    worker = None if args.in_process else ModelProcess(args.model, str(device), config.top_k)
    try:
        app = create_app(model if worker else model.to(device), config, worker)
        print(f"persec serve: http://{config.host}:{config.port}/ (Ctrl+C to stop)", flush=True)
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    finally:
        if worker is not None:
            worker.close()
    return 0
