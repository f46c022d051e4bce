"""What `persec read` costs per crop, in one run: greedy against the model's own decoding,
PyTorch against onnxruntime, batch 1 against a full batch.

Reads the first N crops of a folder with :func:`persec.inference.read.read_images` (PNG/JPEG
decoding, resizing, the network, decoding), in process, the readers taking turns
``--rounds`` times, and prints per reader crops/s at ``--batch-size`` and ms per crop at
batch 1 (on the first ``--n1`` crops), how often its texts differ from the configured
PyTorch reader's, and the machine. With ``--onnx`` the model is first exported to a
temporary ONNX file (``persec export``, ~30 s) and read by onnxruntime with the same
decoding and as many threads as PyTorch. Then times the whole ``persec read`` command
(Python start, imports, model and language-model load) once per reader. Usage::

    python benchmarks/read_latency.py [--model DIR] [--data DIR] [--n 1000] [--n1 100]
        [--rounds 2] [--batch-size 32] [--onnx]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import cpu_model  # noqa: E402

from persec.decoding.settings import describe_decoding  # noqa: E402
from persec.inference.model import load_reader  # noqa: E402
from persec.inference.read import list_images, read_images  # noqa: E402
from persec.precision import cpu_bf16_support  # noqa: E402


def _timed(reader, paths: list[str], batch_size: int) -> tuple[float, list[str]]:
    """Seconds to read ``paths`` (as `persec read` does: orient tall) and the texts."""
    start = time.perf_counter()
    texts = [r.text for r in read_images(reader, paths, batch_size, orient="tall")]
    return time.perf_counter() - start, texts


def _readers(model: str, onnx: str | None) -> dict[str, tuple[list[str], object]]:
    """name -> (the `persec read` arguments, the loaded reader); "configured" is the
    model's saved decoding."""
    out = {
        "PyTorch, greedy": (["--model", model, "--greedy"], load_reader(model, greedy=True)),
        "PyTorch, configured": (["--model", model], load_reader(model)),
    }
    if onnx:
        out["onnxruntime, configured"] = (["--model", onnx], load_reader(onnx))
    return out


def _link_crops(paths: list[str], folder: Path) -> Path:
    """``folder`` holding a link to each of ``paths``, for `persec read FOLDER`."""
    folder.mkdir()
    for i, path in enumerate(paths):
        (folder / f"{i:05d}{Path(path).suffix}").symlink_to(Path(path).resolve())
    return folder


def _command_seconds(arguments: list[str], folder: Path) -> float:
    """Wall time of `persec read ARGUMENTS FOLDER`."""
    cmd = [sys.executable, "-m", "persec.cli", "read", *arguments, str(folder)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "persec" / "shipped" / "persec-small"))
    p.add_argument(
        "--data", default=str(ROOT.parent / "shared" / "data" / "IIIT5K_train" / "images")
    )
    p.add_argument("--n", type=int, default=1000, help="crops read at --batch-size")
    p.add_argument("--n1", type=int, default=100, help="crops read one at a time")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--onnx", action="store_true", help="also read with onnxruntime")
    args = p.parse_args()

    paths = list_images([args.data])[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        onnx = None
        if args.onnx:
            onnx = str(Path(tmp) / "model.onnx")
            from persec.inference.export import export_onnx

            export_onnx(args.model, onnx)
        readers = _readers(args.model, onnx)
        bf16 = "native bf16" if cpu_bf16_support().native else "no native bf16"
        print(
            f"model {args.model}, configured decoding: "
            f"{describe_decoding(readers['PyTorch, configured'][1].config.decoder)}\n"
            f"{len(paths)} crops of {args.data} at batch "
            f"{args.batch_size}, the first {args.n1} at batch 1; orient tall (the read "
            f"default); {cpu_model('unknown CPU')} ({os.cpu_count()} cores, {bf16}), fp32, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads; load average "
            f"{os.getloadavg()[0]:.2f}"
        )
        rates: dict[str, list[float]] = {name: [] for name in readers}
        single: dict[str, list[float]] = {name: [] for name in readers}
        texts: dict[str, list[str]] = {}
        for _ in range(args.rounds):  # the readers take turns, so load hits all alike
            for name, (_, reader) in readers.items():
                seconds, texts[name] = _timed(reader, paths, args.batch_size)
                rates[name].append(len(paths) / seconds)
                seconds, _ = _timed(reader, paths[: args.n1], 1)
                single[name].append(1000 * seconds / args.n1)
        reference = texts["PyTorch, configured"]
        folder = _link_crops(paths, Path(tmp) / "crops")
        print(
            "\n| reader | crops/s, batch "
            f"{args.batch_size} | ms/crop, batch 1 | texts unlike the configured PyTorch "
            "reader's | `persec read` command, s |"
        )
        print("|---|--:|--:|--:|--:|")
        for name, (arguments, _) in readers.items():
            differ = sum(a != b for a, b in zip(texts[name], reference, strict=True))
            command = _command_seconds(arguments, folder)
            print(
                f"| {name} | {statistics.median(rates[name]):.1f} | "
                f"{statistics.median(single[name]):.2f} | {differ} of {len(paths)} | "
                f"{command:.1f} |"
            )
        rounds = "; ".join(
            f"{n}: {', '.join(f'{x:.0f}' for x in rates[n])} crops/s, "
            f"{', '.join(f'{x:.1f}' for x in single[n])} ms"
            for n in readers
        )
        print(f"\nmedians of {args.rounds} rounds ({rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
