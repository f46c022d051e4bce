"""Latency of an exported recognizer on CPU: PyTorch eager vs onnxruntime.

Loads a model (the argument; by default the shipped model, or, when none is shipped, a
freshly built untrained default CTC recognizer: ResNet-small with both aggregators and
a 2-layer BiLSTM, which costs the same per crop as a trained one), exports it to ONNX
in a temporary folder, checks parity, then measures in one run, with the same number of
intra-op threads for both runtimes, on rendered words (held-out fonts):

  * ms per crop at batch 1 (median of single-crop calls);
  * crops/s at batch 64 (median of batch calls);

the four cases take turns, so a change in load hits both runtimes alike.

Prints a Markdown table with the onnxruntime / PyTorch ratios. Usage::

    python benchmarks/export_latency.py [MODEL_DIR] [--threads N] [--seconds S]

Other processes compete for the same cores: the load average is printed with the
table so numbers from a busy machine can be told apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from persec.data.render.synth import WordRenderer  # noqa: E402
from persec.hub import default_model_dir
from persec.inference.export import export_onnx  # noqa: E402
from persec.inference.model import load_model  # noqa: E402
from persec.inference.onnx_runtime import OnnxRecognizer, check_parity
from persec.models.recognizer import CONFIG, Recognizer, RecognizerConfig  # noqa: E402

BIG_BATCH = 64


def measure(
    model: Recognizer, onnx: OnnxRecognizer, crops: torch.Tensor, seconds: float, rounds: int = 3
) -> dict[str, tuple[float, float]]:
    """{runtime: (ms per crop at batch 1, crops/s at batch 64)}, from median call times.

    The four cases take turns for ``rounds`` rounds of ``seconds / rounds`` each, so a
    change in the machine's load hits both runtimes alike.
    """
    runtimes = {"PyTorch eager": model, "onnxruntime": onnx}
    batches = {1: crops[:1], BIG_BATCH: crops[:BIG_BATCH]}
    times: dict[tuple[str, int], list[float]] = {(r, b): [] for r in runtimes for b in batches}
    with torch.inference_mode():
        for name, b in times:
            for _ in range(3):  # warm-up: allocator, onnxruntime's first-run planning
                runtimes[name](batches[b])
        for _ in range(rounds):
            for (name, b), samples in times.items():
                start = time.perf_counter()
                while True:  # at least one call per round
                    t = time.perf_counter()
                    runtimes[name](batches[b])
                    samples.append(time.perf_counter() - t)
                    if t - start >= seconds / rounds:
                        break
    return {
        name: (
            1000 * statistics.median(times[name, 1]),
            BIG_BATCH / statistics.median(times[name, BIG_BATCH]),
        )
        for name in runtimes
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="saved model dir (default: shipped/untrained)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing per measurement")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.model:
        model, source = load_model(args.model), args.model
    elif (default_model_dir() / CONFIG).is_file():
        model, source = load_model(None), str(default_model_dir())
    else:
        torch.manual_seed(0)
        model, source = Recognizer(RecognizerConfig()).eval(), "untrained default CTC model"
    params = sum(p.numel() for p in model.parameters()) / 1e6

    renderer = WordRenderer(split="test", seed=0)
    crops = torch.stack([model.preprocess(renderer.render(i)[0]) for i in range(BIG_BATCH)])

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_onnx(model, Path(tmp) / "model.onnx")
        export_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        onnx = OnnxRecognizer(path, threads=args.threads)
        parity = check_parity(model, onnx, crops)
        results = measure(model, onnx, crops, args.seconds)

    cfg = model.config
    print(
        f"model: {source} ({cfg.encoder.name}-{cfg.encoder.size}, {cfg.decoder.name}, "
        f"{params:.1f}M params, {cfg.image.height}x{cfg.image.width}); "
        f"export {export_s:.0f} s, {size_mb:.1f} MB"
    )
    print(f"parity on {parity.n} rendered crops: {parity.summary()}")
    print(
        f"threads: {args.threads} (torch and onnxruntime); torch {torch.__version__}; "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    print(f"| runtime | ms / crop, batch 1 | crops/s, batch {BIG_BATCH} |")
    print("|---|---|---|")
    for name, (ms, rate) in results.items():
        print(f"| {name} | {ms:.2f} | {rate:.0f} |")
    (t_ms, t_rate), (o_ms, o_rate) = results["PyTorch eager"], results["onnxruntime"]
    print(f"| onnxruntime / PyTorch | {o_ms / t_ms:.2f}x time | {o_rate / t_rate:.2f}x rate |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
