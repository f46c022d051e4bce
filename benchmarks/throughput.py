"""Throughput of the shipped configs against this machine's matmul ceiling.

One run measures, in order:

1. the ceiling: fp32 and bf16 ``torch.mm`` GFLOP/s on square matrices, all cores;
2. every model row (encoder + decoder, or encoder + PerSec objective for pretraining)
   at its config's image and batch size: FLOPs per image (``FlopCounterMode``, with
   the ops it misses on CPU -- LSTM and CPU flash attention -- counted by formula),
   training images/s (forward + loss + backward + clipping + optimiser step, as the
   Lightning systems do) and inference images/s (eval, no grad), in fp32 and, for
   ``bf16-mixed`` configs, under bf16 autocast; the achieved GFLOP/s as a share of
   the matching ceiling;
3. the real training loader of each data config (renderer, LMDB reads, transforms,
   ``ResumableSampler``, collate) with the configured and 2 workers, against what
   the models fed by it consume, and one short training run fed by that loader.

Inputs are synthetic (random images and words), weights random: throughput does not
depend on them, except the attention decoder's greedy decoding, which stops when
every word has ended (so its inference rate is a lower bound).

Usage::

    python benchmarks/throughput.py                     # everything, all cores
    python benchmarks/throughput.py --quick             # smoke run: 1+2 iterations each
    python benchmarks/throughput.py --models vit        # rows whose name contains "vit"
    python benchmarks/throughput.py --profile vit-ctc   # top ops of a few training steps
    python benchmarks/throughput.py --glibc-default     # glibc frees big blocks at once

Tables are printed and written to ``benchmarks/results/throughput/`` (Markdown and
JSON). Other processes compete for the same cores: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_info import cpu_model  # noqa: E402

from persec.config import load_config  # noqa: E402
from persec.data.module import RecognitionDataModule, UnlabelledDataModule  # noqa: E402
from persec.errors import PersecError  # noqa: E402
from persec.models.recognizer import Recognizer  # noqa: E402
from persec.precision import cpu_bf16_support, resolve_precision  # noqa: E402
from persec.training.finetune import FinetuneConfig  # noqa: E402
from persec.training.optim import build_optimizer  # noqa: E402
from persec.training.pretrain import PretrainConfig, build_pretraining  # noqa: E402
from persec.training.trainer import keep_freed_memory  # noqa: E402

OUT_DIR = ROOT / "benchmarks" / "results" / "throughput"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Share of the fp32 matmul ceiling that fp32 training should reach (issue 7).
TARGETS = {"resnet": 70.0, "vit": 50.0}


@dataclass(frozen=True)
class Row:
    """One model to measure: a shipped config, optionally with overrides."""

    name: str
    kind: str  # "finetune" or "pretrain"
    config: str
    overrides: tuple[str, ...] = ()


ROWS = (
    Row("cnn-ctc", "finetune", "configs/finetune/cpu-ctc.yaml"),
    Row("cnn-attn", "finetune", "configs/finetune/cpu-attn.yaml"),
    Row("cnn-linear-ctc (shipped)", "finetune", "configs/recipes/persec-small-cpu/2-finetune.yaml"),
    Row("vit-ctc", "finetune", "configs/finetune/cpu-ctc.yaml", ("model.encoder.name=vit",)),
    Row("persec-cnn (pretrain)", "pretrain", "configs/pretrain/cpu.yaml"),
    Row(
        "persec-cnn-sem (shipped pretrain)",
        "pretrain",
        "configs/recipes/persec-small-cpu/1-pretrain.yaml",
    ),
    Row("persec-vit (pretrain)", "pretrain", "configs/pretrain/cpu.yaml", ("model.name=vit",)),
)


# ----------------------------------------------------------------------------- timing
def rate(fn: Callable[[], None], per_call: int, warmup: int, iters: int, repeats: int) -> float:
    """Median over ``repeats`` of items/s of ``iters`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        rates.append(per_call * iters / (time.perf_counter() - start))
    return statistics.median(rates)


def matmul_ceiling(dtype: torch.dtype, n: int, repeats: int) -> float:
    """Best GFLOP/s of ``torch.mm`` on two n×n matrices of ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    # Warm up for ~1 s: the first calls of a process ran at 0.4-0.8x the later rate here.
    start = time.perf_counter()
    while time.perf_counter() - start < 1.0:
        torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


# ----------------------------------------------------------------------------- FLOPs
def _lstm_layer_flops(x, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    """One direction of one ``mkldnn_rnn_layer``: 4 gates of (x W_ih + h W_hh), 2 FLOPs/MAC."""
    t, b = x[0], x[1]  # time-major (T, B, I)
    return 2 * t * b * w_ih[0] * (w_ih[1] + w_hh[1])


def _lstm_layer_backward_flops(x, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    """Gradients of the input and of both weights: twice the forward."""
    return 2 * _lstm_layer_flops(x, w_ih, w_hh)


def _sdpa_cpu_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _sdpa_cpu_backward_flops(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


# FlopCounterMode's registry has no entry for these CPU kernels and counts them as 0.
CPU_FLOPS = {
    torch.ops.aten.mkldnn_rnn_layer: _lstm_layer_flops,
    torch.ops.aten.mkldnn_rnn_layer_backward: _lstm_layer_backward_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flops,
}


def count_flops(fn: Callable[[], None]) -> int:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention, LSTM)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_FLOPS) as counter:
        fn()
    return counter.get_total_flops()


# ----------------------------------------------------------------------------- models
def random_words(charset_chars: tuple[str, ...], n: int, seed: int = 0) -> list[str]:
    """``n`` random words of 3-10 characters (the renderer's typical lengths)."""
    rng = random.Random(seed)
    return ["".join(rng.choices(charset_chars, k=rng.randint(3, 10))) for _ in range(n)]


class Workload:
    """A model built from a shipped config, with one training step and one inference
    call on a fixed synthetic batch."""

    def __init__(self, row: Row):
        self.row = row
        path = ROOT / row.config
        if row.kind == "finetune":
            cfg = load_config(FinetuneConfig, path, row.overrides)
            self.model = Recognizer(cfg.model)
            image = cfg.model.image
            self.labels = random_words(self.model.charset.chars, cfg.data.batch_size)
            self.params = list(self.model.parameters())
            self.modules = [self.model]
        else:
            cfg = load_config(PretrainConfig, path, row.overrides)
            self.encoder, self.objective = build_pretraining(cfg)
            image = cfg.image
            self.params = [*self.encoder.parameters(), *self.objective.parameters()]
            self.modules = [self.encoder, self.objective]
        self.cfg = cfg
        self.encoder_name = cfg.model.encoder.name if row.kind == "finetune" else cfg.model.name
        self.batch = cfg.data.batch_size
        # What the config trains in on this CPU (``auto`` resolved as a run resolves it).
        self.bf16_config = resolve_precision(cfg.trainer.precision, "cpu")[0].startswith("bf16")
        g = torch.Generator().manual_seed(0)
        shape = (self.batch, image.channels, image.height, image.width)
        self.images = torch.rand(shape, generator=g) * 2 - 1
        self.optimizer = build_optimizer(self.params, cfg.optim)
        self.step = 0

    def train_mode(self, on: bool) -> None:
        for m in self.modules:
            m.train(on)

    def loss(self) -> torch.Tensor:
        """Forward + loss on the batch, as the system's ``training_step``."""
        if self.row.kind == "finetune":
            logits = self.model(self.images, self.labels)  # (B, L, V)
            return self.model.loss(logits, self.labels)
        self.objective.set_step(self.step)
        return self.objective(self.encoder, self.images).loss

    def train_step(self, bf16: bool, images: torch.Tensor | None = None, labels=None) -> None:
        """One optimiser step; ``images``/``labels`` replace the synthetic batch."""
        if images is not None:  # a loader batch
            self.images = images
            if self.row.kind == "finetune":  # mapped as RecognitionSystem._labels does
                self.labels = [self.model.charset.strip_unsupported(x) for x in labels]
        with autocast(bf16):
            loss = self.loss()
        loss.backward()
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    @torch.inference_mode()
    def infer(self, bf16: bool) -> None:
        """Recognizer: logits (greedy decoding for attention); pretraining: the encoder."""
        with autocast(bf16):
            if self.row.kind == "finetune":
                self.model(self.images)
            else:
                self.encoder(self.images)

    def flops(self) -> dict[str, float]:
        """FLOPs per image of the training forward, forward + backward, and inference."""
        self.train_mode(True)
        fwd = count_flops(lambda: self.loss())
        train = count_flops(lambda: self.loss().backward())
        self.optimizer.zero_grad(set_to_none=True)
        self.train_mode(False)
        infer = count_flops(lambda: self.infer(False))
        return {"fwd": fwd / self.batch, "train": train / self.batch, "infer": infer / self.batch}


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()


def measure_model(row: Row, ceilings: dict[str, float], it: dict) -> tuple[list[dict], Workload]:
    """Rows (one per precision) of the model table for ``row``."""
    w = Workload(row)
    flops = w.flops()
    params = sum(p.numel() for p in w.params)
    out = []
    for precision in ("fp32", "bf16"):  # both, side by side, whatever the CPU
        bf16 = precision == "bf16"
        w.train_mode(True)
        train = rate(lambda b=bf16: w.train_step(b), w.batch, **it)
        w.train_mode(False)
        infer = rate(lambda b=bf16: w.infer(b), w.batch, **it)
        train_gflops = flops["train"] * train / 1e9
        infer_gflops = flops["infer"] * infer / 1e9
        target = TARGETS.get(w.encoder_name) if precision == "fp32" else None
        out.append(
            {
                "model": row.name,
                "config": row.config + "".join(f" {o}" for o in row.overrides),
                "precision": precision,
                "config_precision": bf16 == w.bf16_config,
                "params": params,
                "batch": w.batch,
                "gflops_fwd": flops["fwd"] / 1e9,
                "gflops_train": flops["train"] / 1e9,
                "gflops_infer": flops["infer"] / 1e9,
                "train_img_s": train,
                "train_gflop_s": train_gflops,
                "train_ceiling_pct": 100 * train_gflops / ceilings[precision],
                "target_pct": target,
                "infer_img_s": infer,
                "infer_gflop_s": infer_gflops,
                "infer_ceiling_pct": 100 * infer_gflops / ceilings[precision],
            }
        )
        print(_model_line(out[-1]), flush=True)
    return out, w


# ----------------------------------------------------------------------------- data
def data_module(w: Workload, workers: int):
    """The training data module of ``w``'s config, with ``workers`` loader processes."""
    cfg = w.cfg
    cfg.data.workers = workers
    if w.row.kind == "finetune":
        module = RecognitionDataModule(cfg.data, cfg.model.image, w.model.charset, cfg.trainer.seed)
    else:
        module = UnlabelledDataModule(cfg.data, cfg.image, cfg.trainer.seed)
    module.setup("fit")
    return module


def loader_rate(w: Workload, workers: int, batches: int, repeats: int) -> float:
    """Images/s of the real training loader (median of ``repeats`` runs of ``batches``)."""
    loader = data_module(w, workers).train_dataloader()
    batches_iter = iter(loader)
    next(batches_iter)  # worker start-up and the first batch
    rates = []
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        for _ in range(batches):
            n += len(next(batches_iter)[0])
        rates.append(n / (time.perf_counter() - start))
    del batches_iter, loader
    return statistics.median(rates)


def fed_train_rate(w: Workload, bf16: bool, steps: int, warmup: int) -> float:
    """Training images/s when the configured loader feeds the steps (both share the cores)."""
    loader = data_module(w, w.cfg.data.workers).train_dataloader()
    batches = iter(loader)
    w.train_mode(True)
    for _ in range(warmup):
        images, labels, _ = next(batches)
        w.train_step(bf16, images, labels)
    start, n = time.perf_counter(), 0
    for _ in range(steps):
        images, labels, _ = next(batches)
        w.train_step(bf16, images, labels)
        n += len(images)
    return n / (time.perf_counter() - start)


def data_description(w: Workload) -> str:
    d = w.cfg.data
    parts = [f"{p} x{d.train_repeat}" for p in d.train] + (
        [f"rendered {d.synth_train:,}"] if d.synth_train else []
    )
    return " + ".join(parts)


def measure_data(workloads: list[Workload], models: list[dict], quick: bool) -> list[dict]:
    """Data-table rows: each distinct data config once (the ViT rows share theirs),
    with its configured and 2 workers, against every model it feeds."""
    groups: dict[tuple, list[Workload]] = {}
    for w in workloads:
        groups.setdefault((w.row.kind, w.row.config), []).append(w)
    batches, repeats = (3, 1) if quick else (10, 3)
    rows = []
    for (_, config), ws in groups.items():
        base, fed = ws[0], None
        configured = base.cfg.data.workers
        for workers in sorted({configured, 2}):
            try:
                loader = loader_rate(base, workers, batches, repeats)
                if workers == configured:
                    fed = fed_train_rate(
                        base, base.bf16_config, 2 if quick else 10, 1 if quick else 2
                    )
            except PersecError as e:  # e.g. the shipped config's data not prepared
                print(f"# {config}: data not measured: {e}", flush=True)
                break
            for i, w in enumerate(ws):
                prec = "bf16" if w.bf16_config else "fp32"
                train = next(
                    r["train_img_s"]
                    for r in models
                    if r["model"] == w.row.name and r["precision"] == prec
                )
                entry = {
                    "data": data_description(base),
                    "config": config,
                    "workers": workers,
                    "loader_img_s": loader,
                    "consumer": f"{w.row.name} ({prec})",
                    "train_img_s": train,
                    "ratio": loader / train,
                    "fed_train_img_s": fed if i == 0 and workers == configured else None,
                }
                rows.append(entry)
                print(_data_line(entry), flush=True)
    return rows


# ----------------------------------------------------------------------------- output
MODEL_HEADER = (
    "| model | precision | params | GFLOPs/img (fwd) | train img/s | train GFLOP/s "
    "| % of ceiling | target | infer img/s |\n|---|---|--:|--:|--:|--:|--:|--:|--:|"
)
DATA_HEADER = (
    "| data (config) | workers | loader img/s | consumer (config precision) | train img/s "
    "| loader / train | train img/s fed by loader |\n|---|--:|--:|---|--:|--:|--:|"
)


def _model_line(r: dict) -> str:
    target = ""
    if r["target_pct"] is not None:
        met = "met" if r["train_ceiling_pct"] >= r["target_pct"] else "below"
        target = f"{r['target_pct']:.0f}% ({met})"
    return (
        f"| {r['model']} | {r['precision']}{' (auto)' if r['config_precision'] else ''} "
        f"| {r['params'] / 1e6:.1f}M | {r['gflops_fwd']:.2f} | {r['train_img_s']:.1f} "
        f"| {r['train_gflop_s']:.0f} | {r['train_ceiling_pct']:.0f}%"
        f"{' of fp32' if r.get('ceiling_of') == 'fp32' and r['precision'] == 'bf16' else ''} "
        f"| {target} "
        f"| {r['infer_img_s']:.0f} |"
    )


def _data_line(r: dict) -> str:
    fed = f"{r['fed_train_img_s']:.1f}" if r.get("fed_train_img_s") else ""
    return (
        f"| {r['data']} ({r['config']}) | {r['workers']} | {r['loader_img_s']:.0f} "
        f"| {r['consumer']} | {r['train_img_s']:.1f} | {r['ratio']:.1f}x | {fed} |"
    )


def machine() -> dict:
    cpu = cpu_model(platform.processor())
    bf16 = cpu_bf16_support()
    return {
        "cpu": cpu,
        "bf16_native": bf16.native,
        "bf16_reason": bf16.reason,
        "cores": len(os.sched_getaffinity(0)),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_before": os.getloadavg()[0],
    }


# ----------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> None:
    it = (
        {"warmup": 1, "iters": 2, "repeats": 1}
        if args.quick
        else {"warmup": 3, "iters": 5, "repeats": 3}
    )
    info = machine()
    info["keep_freed_memory"] = args.kept
    print(
        f"# {info['cpu']}, {info['cores']} CPUs, {info['threads']} torch threads, "
        f"torch {info['torch']}, load average {info['load_before']:.2f}; "
        f"bf16 {'native' if info['bf16_native'] else 'not native'} ({info['bf16_reason']})"
        + ("" if info["keep_freed_memory"] else ", glibc's default allocator (--glibc-default)"),
        flush=True,
    )
    n, reps = args.matmul_size, 3 if args.quick else 10
    ceilings = {p: matmul_ceiling(DTYPES[p], n, reps) for p in DTYPES}
    print(
        f"# ceiling: torch.mm {n}x{n}, fp32 {ceilings['fp32']:.0f} GFLOP/s, "
        f"bf16 {ceilings['bf16']:.1f} GFLOP/s",
        flush=True,
    )
    # Emulated bf16 has no ceiling of its own (its matmul is far below fp32's): its rows
    # are measured against the fp32 ceiling, the most this CPU can do.
    emulated = not info["bf16_native"]
    reference = {"fp32": ceilings["fp32"], "bf16": ceilings["fp32" if emulated else "bf16"]}
    print(MODEL_HEADER, flush=True)
    models, workloads = [], {}
    for row in ROWS:
        if args.models and not any(m in row.name for m in args.models):
            continue
        rows, workloads[row.name] = measure_model(row, reference, it)
        models += rows

    print(DATA_HEADER, flush=True)
    data = measure_data(list(workloads.values()), models, args.quick)
    # Again at the end. The percentages in the written tables use the higher of the two
    # (the lower percentage): a ceiling measured low would flatter every row.
    info["ceiling_end_gflop_s"] = {p: matmul_ceiling(DTYPES[p], n, reps) for p in DTYPES}
    best = {p: max(ceilings[p], info["ceiling_end_gflop_s"][p]) for p in DTYPES}
    if emulated:
        best["bf16"] = best["fp32"]
    for r in models:
        r["ceiling_of"] = "fp32" if emulated and r["precision"] == "bf16" else r["precision"]
        r["train_ceiling_pct"] = 100 * r["train_gflop_s"] / best[r["precision"]]
        r["infer_ceiling_pct"] = 100 * r["infer_gflop_s"] / best[r["precision"]]
    info["load_after"] = os.getloadavg()[0]
    info["ceiling_gflop_s"] = ceilings
    info["matmul_size"] = n
    info["iterations"] = it
    print(f"# load average after: {info['load_after']:.2f}")
    write(args, info, models, data)


def write(args, info: dict, models: list[dict], data: list[dict]) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "throughput-quick" if args.quick else "throughput"
    md = [
        f"Machine: {info['cpu']}, {info['cores']} CPUs, {info['threads']} torch threads, "
        f"torch {info['torch']}; bf16 {'native' if info['bf16_native'] else 'not native'} "
        f"({info['bf16_reason']}); load average {info['load_before']:.2f} before, "
        f"{info['load_after']:.2f} after"
        + ("." if info["keep_freed_memory"] else "; glibc's default allocator (--glibc-default)."),
        "",
        f"Ceiling (`torch.mm` {info['matmul_size']}x{info['matmul_size']}, best of "
        f"{10 if not args.quick else 3}): fp32 {info['ceiling_gflop_s']['fp32']:.0f} GFLOP/s, "
        f"bf16 {info['ceiling_gflop_s']['bf16']:.0f} GFLOP/s at the start; "
        f"{info['ceiling_end_gflop_s']['fp32']:.0f} and "
        f"{info['ceiling_end_gflop_s']['bf16']:.0f} at the end; *% of ceiling* divides by "
        "the higher of the two (the live table printed during the run used the first)"
        + (
            "; bf16 is emulated here, so its rows divide by the fp32 ceiling."
            if not info["bf16_native"]
            else "."
        ),
        "",
        MODEL_HEADER,
        *(_model_line(r) for r in models),
        "",
        DATA_HEADER,
        *(_data_line(r) for r in data),
        "",
    ]
    (out / f"{stem}.md").write_text("\n".join(md))
    payload = {"machine": info, "models": models, "data": data}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"# wrote {out / stem}.md and .json")


def profile(args: argparse.Namespace) -> None:
    """Top ops by self CPU time over a few training steps of one row."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    row = next(r for r in ROWS if args.profile in r.name)
    w = Workload(row)
    bf16 = w.bf16_config and not args.fp32
    w.train_mode(True)
    for _ in range(2):
        w.train_step(bf16)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            w.train_step(bf16)
    print(f"# {row.name}, {'bf16' if bf16 else 'fp32'}, {args.steps} training steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few iterations")
    parser.add_argument("--models", nargs="*", help="only rows whose name contains one of these")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="ceiling matrix size")
    parser.add_argument("--out", default=str(OUT_DIR), help="where the tables go")
    parser.add_argument("--profile", metavar="ROW", help="profile a few training steps of a row")
    parser.add_argument("--steps", type=int, default=5, help="steps to profile")
    parser.add_argument("--rows", type=int, default=25, help="ops to list when profiling")
    parser.add_argument("--fp32", action="store_true", help="profile in fp32")
    parser.add_argument(
        "--glibc-default",
        action="store_true",
        help="leave glibc's allocator as it is (training keeps freed memory: "
        "trainer.keep_freed_memory)",
    )
    args = parser.parse_args()
    args.out = str(Path(args.out).resolve())
    os.chdir(ROOT)  # config paths (e.g. data.train) are relative to the repository
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    # As training does (TrainerConfig.keep_freed_memory): big tensors reuse mapped pages.
    args.kept = not args.glibc_default and keep_freed_memory()
    if args.profile:
        profile(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
