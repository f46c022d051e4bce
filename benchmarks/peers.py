"""Peers, side by side: offline OCR recognizers and persec models on the same word crops.

Systems (each behind a small adapter: ``load()``, ``read_batch(images) -> texts``):

* ``rapidocr``: RapidOCR's PP-OCR recognition ONNX (inside the wheel), recognizer only;
* ``easyocr``: EasyOCR's English recognizer, in its own virtual environment
  (``.venv-easyocr``) behind a long-lived worker (``peers_easyocr_worker.py``), with
  each of ``--easyocr-decoders`` (default: its default, greedy); its
  load time and per-crop times are measured inside the worker, without the pipe;
* ``tesseract``: Debian's Tesseract 5, ``--psm 7``, a 10 px border, through tesserocr,
  libtesseract via ctypes, or one ``tesseract`` process per crop (first that works);
* ``persec``: every ``--persec-model DIR`` (default ``persec/shipped/persec-small`` if present),
  decoded as its config says; with ``--persec-greedy`` each also decoded greedily.

Datasets: ``IIIT5K_train`` and ``real_demo`` from ``../shared/data`` and ``hard_rendered``,
rendered once with persec's hard preset in held-out fonts (cached under ``--out``).
Every system is scored by persec's own metric code (:class:`persec.metrics.ScoreAccumulator`,
the standard protocol: 36 case-insensitive alphanumerics). Per system and dataset:

* accuracy and 1 - NED of batch-1 predictions, one crop per call;
* ms per crop: median over those calls, after a 3-crop warm-up;
* crops/s at the best of batch 1, 8, 32, 128 on the first 512 crops (batch 1 only for
  systems that do not batch);
* load time: building the recognizer and reading its weights (imports excluded).

A system that is missing or fails gets a row with the reason instead of numbers.
``make peers`` installs the peers and runs this. Usage::

    python benchmarks/peers.py [--persec-model DIR ...] [--persec-greedy] [--systems S ...]
        [--datasets D ...] [--limit N] [--hard-n N] [--out DIR] [--report FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import cpu_model  # noqa: E402
from peers_adapters import ADAPTERS, PeerUnavailable, PersecPeer  # noqa: E402

from persec.data.dataset import Skipped  # noqa: E402
from persec.data.layouts import open_dataset  # noqa: E402
from persec.metrics import ScoreAccumulator, eval_charset  # noqa: E402

REAL = {name: ROOT.parent / "shared" / "data" / name for name in ("IIIT5K_train", "real_demo")}
HARD = "hard_rendered"
HARD_SEED = 7
BATCH_SIZES = (8, 32, 128)
THROUGHPUT_POOL = 512
WARMUP = 3
SYSTEMS = ("rapidocr", "easyocr", "tesseract", "persec")
COLUMNS = (
    ("dataset", "Dataset"),
    ("system", "System"),
    ("samples", "# samples"),
    ("word_acc", "Accuracy"),
    ("one_minus_ned", "1 - NED"),
    ("ms_per_crop", "ms/crop (b=1)"),
    ("crops_per_s", "crops/s (best b)"),
    ("load_s", "Load (s)"),
    ("note", "Note"),
)


# ---------------------------------------------------------------- data
def hard_dataset(out: Path, n: int) -> Path:
    """The hard rendered test set (held-out fonts), rendered once and cached."""
    from persec.data.render.config import HardSynthConfig
    from persec.data.render.writer import render_lmdb

    path = out / "cache" / f"hard-test-seed{HARD_SEED}-n{n}"
    if not (path / "render.yaml").is_file():
        for name in ("data.mdb", "lock.mdb"):  # a half-written one from an interrupted run
            (path / name).unlink(missing_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        print(f"rendering {n} hard test images into {path}", file=sys.stderr)
        render_lmdb(path, n, HardSynthConfig(), split="test", seed=HARD_SEED, workers=0)
    return path


def load_crops(path: Path, limit: int | None) -> tuple[list, list[str], int]:
    """(RGB PIL images, labels, skipped) of a dataset read the eval way: labels mapped
    through the eval charset, empty or > 25 characters skipped, as ``persec eval`` does."""
    dataset = open_dataset(
        path, charset=eval_charset(), max_label_length=25, remove_unsupported=True
    )
    images, labels, skipped = [], [], sum(dataset.report.counts.values())
    for i in range(len(dataset)):
        if limit is not None and len(images) >= limit:
            break
        item = dataset[i]
        if isinstance(item, Skipped):
            skipped += 1
            continue
        images.append(item[0].convert("RGB"))
        labels.append(item[1])
    return images, labels, skipped


# ---------------------------------------------------------------- measuring
def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def best_throughput(peer, images: list, batch1_rate: float) -> tuple[float, int]:
    """(crops/s, batch size) at the best of batch 1 (given) and ``BATCH_SIZES``."""
    best = (batch1_rate, 1)
    if not peer.batches:
        return best
    pool = images[:THROUGHPUT_POOL]
    for size in BATCH_SIZES:
        if size > len(pool):
            break
        chunks = [pool[i : i + size] for i in range(0, len(pool), size)]
        peer.timed_read(chunks[0])  # warm-up at this shape
        seconds = sum(peer.timed_read(chunk)[1] for chunk in chunks)
        rate = len(pool) / seconds
        if rate > best[0]:
            best = (rate, size)
    return best


def run_one(peer, name: str, images: list, labels: list[str]) -> tuple[dict, list[str]]:
    """Score ``peer`` on one dataset; returns the row and the batch-1 predictions."""
    for image in images[:WARMUP]:
        peer.timed_read([image])
    preds, seconds = [], []
    for image in images:
        texts, spent = peer.timed_read([image])
        preds.extend(texts)
        seconds.append(spent)
    acc = ScoreAccumulator(name)
    acc.update(preds, labels)
    score = acc.compute()
    rate, size = best_throughput(peer, images, len(images) / sum(seconds))
    row = {
        "samples": score.samples,
        "word_acc": score.word_acc,
        "one_minus_ned": score.one_minus_ned,
        "cer": score.cer,
        "ms_per_crop": 1000 * statistics.median(seconds),
        "crops_per_s": rate,
        "best_batch": size,
    }
    return row, preds


def make_peers(systems: list[str], models: list[Path], args) -> list:
    peers = []
    for system in systems:
        if system == "persec":
            if not models:
                peers.append(PersecPeer(None))  # reports that no model was found
            peers.extend(PersecPeer(m) for m in models)
            if args.persec_greedy:
                peers.extend(PersecPeer(m, greedy=True) for m in models)
        elif system == "easyocr":
            for decoder in args.easyocr_decoders:
                peers.append(ADAPTERS[system](python=args.easyocr_python, decoder=decoder))
        elif system == "tesseract":
            peers.append(ADAPTERS[system](backend=args.tesseract_backend))
        else:
            peers.append(ADAPTERS[system]())
    seen: dict[str, int] = {}
    for peer in peers:  # two model folders of the same name must not share rows
        seen[peer.name] = seen.get(peer.name, 0) + 1
        if seen[peer.name] > 1:
            peer.name, peer.slug = (
                f"{peer.name} #{seen[peer.name]}",
                f"{peer.slug}-{seen[peer.name]}",
            )
    return peers


# ---------------------------------------------------------------- reporting
def _cell(key: str, row: dict) -> str:
    value = row.get(key)
    if value is None:
        return "" if key == "note" else "-"
    if key == "crops_per_s":
        return f"{value:.1f} (b={row['best_batch']})"
    if key in ("word_acc", "one_minus_ned", "load_s"):
        return f"{value:.2f}"
    if key == "ms_per_crop":
        return f"{value:.1f}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    cells = [[title for _, title in COLUMNS]] + [[_cell(k, r) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    left = {"dataset", "system", "note"}

    def line(row: list[str]) -> str:
        padded = [
            c.ljust(w) if k in left else c.rjust(w)
            for c, w, (k, _) in zip(row, widths, COLUMNS, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        ":" + "-" * (w + 1) if k in left else "-" * (w + 1) + ":"
        for w, (k, _) in zip(widths, COLUMNS, strict=True)
    )
    return "\n".join([line(cells[0]), rule + "|", *(line(c) for c in cells[1:])])


def machine() -> dict:
    cpu = cpu_model(platform.processor() or platform.machine())
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# Share of the machine's CPU time that other processes may use during a run before
# its timings are flagged as contended.
CONTENDED_SHARE = 0.25


def cpu_clock() -> dict | None:
    """CPU seconds: all CPUs busy since boot (``/proc/stat``), and this process with its
    waited-for children (the EasyOCR worker); None where ``/proc/stat`` is missing."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    own = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return {
        "busy": (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"),  # less idle, iowait
        "own": sum(r.ru_utime + r.ru_stime for r in own),
        "wall": time.monotonic(),
    }


def others_share(start: dict | None, end: dict | None, cores: int) -> float | None:
    """Share of the machine's CPU time (0-1) that other processes used between two
    :func:`cpu_clock` readings; None when it cannot be measured."""
    if start is None or end is None or end["wall"] <= start["wall"]:
        return None
    others = (end["busy"] - start["busy"]) - (end["own"] - start["own"])
    return max(0.0, others) / ((end["wall"] - start["wall"]) * cores)


def busy(meta: dict) -> bool:
    """Whether other work shared the CPU: other processes used more than
    :data:`CONTENDED_SHARE` of the machine during the run. Without ``/proc/stat``, a
    1-minute load average above half the cores at the start or end (which counts the
    benchmark's own threads, so it errs towards flagging)."""
    cores = meta["machine"]["cores"] or 1
    if meta.get("others_cpu_share") is not None:
        return meta["others_cpu_share"] > CONTENDED_SHARE
    return max(meta["load_start"][0], meta["load_end"][0]) > cores / 2


def report(rows: list[dict], meta: dict) -> str:
    """The Markdown report: provenance, the table, the protocol and how each system ran."""
    m = meta["machine"]
    lines = [
        "# Peers, side by side",
        "",
        f"- date: {meta['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}",
        f"- load average (1/5/15 min) at start {meta['load_start']}, at end {meta['load_end']}",
        *(
            [
                f"- CPU time used by other processes during the run: {100 * share:.0f}% of the machine"
            ]
            if (share := meta.get("others_cpu_share")) is not None
            else []
        ),
        f"- command: `{meta['command']}`",
        "",
    ]
    if busy(meta):
        lines += [
            "**The timing columns (ms/crop, crops/s, load) were measured while other jobs "
            "used the CPU** (see above): compare accuracy only, and re-run on an "
            "idle machine for timings.",
            "",
        ]
    lines += [
        markdown_table(rows),
        "",
        "Accuracy and 1 - NED in percent, standard protocol (persec's `ScoreAccumulator`: "
        "prediction and label both mapped to 36 case-insensitive alphanumerics; labels "
        "empty or longer than 25 after mapping are skipped, as in `persec eval`), from "
        f"batch-1 predictions. ms/crop: median of batch-1 calls after a {WARMUP}-crop "
        "warm-up, image in to text out, preprocessing included. crops/s: the best of "
        f"batch 1 and {', '.join(map(str, BATCH_SIZES))} on the first {THROUGHPUT_POOL} "
        "crops (b = the batch size that won; b=1 only for systems that do not batch). "
        "Load: building the recognizer and reading its weights, imports excluded.",
        "",
        "Datasets:",
        "",
    ]
    for name, d in meta["datasets"].items():
        note = f"; {d['note']}" if d.get("note") else ""
        lines.append(
            f"- `{name}`: `{d['path']}`, {d['crops']} crops ({d['skipped']} skipped){note}"
        )
    lines += [
        "",
        "A persec model trained on part of a dataset (as `make train-shipped` does with "
        "IIIT5K_train) has no held-out score on it: compare on its held-out part instead "
        "(e.g. `--datasets runs/shipped/iiit5k/heldout`).",
        "",
        "How each system ran:",
        "",
    ]
    lines += [f"- **{name}**: {how}" for name, how in meta["systems"].items()]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: list[dict], meta: dict, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.md").write_text(text)
    keys = ["dataset", "system", "samples", "word_acc", "one_minus_ned", "cer"]
    keys += ["ms_per_crop", "crops_per_s", "best_batch", "load_s", "note"]
    with open(out / "peers.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "peers.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--persec-model", action="append", default=[], metavar="DIR")
    p.add_argument(
        "--persec-greedy",
        action="store_true",
        help="also run each persec model decoded greedily (without its beam search and LM)",
    )
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    p.add_argument(
        "--datasets",
        nargs="+",
        default=[*REAL, HARD],
        metavar="D",
        help=f"names ({', '.join([*REAL, HARD])}) or dataset folders",
    )
    p.add_argument("--limit", type=int, metavar="N", help="first N crops of each dataset")
    p.add_argument("--hard-n", type=int, default=1000, metavar="N", help="hard set size")
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "runs" / "peers",
        metavar="DIR",
        help="where peers.md, peers.csv, peers.json, predictions/ and the rendered hard "
        "set go (default: runs/peers/, outside git; `make peers` writes the committed "
        "benchmarks/results/peers/)",
    )
    p.add_argument(
        "--report", type=Path, metavar="FILE", help="also write the report here (besides --out)"
    )
    p.add_argument("--easyocr-python", default=str(ROOT / ".venv-easyocr" / "bin" / "python"))
    p.add_argument(
        "--easyocr-decoders",
        nargs="+",
        choices=["greedy", "beamsearch", "wordbeamsearch"],
        default=["greedy"],
        help="EasyOCR decoders to run, one row each (default: greedy, its default)",
    )
    p.add_argument(
        "--tesseract-backend", choices=["auto", "tesserocr", "ctypes", "cli"], default="auto"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = [Path(m) for m in args.persec_model]
    if not models and (ROOT / "persec" / "shipped" / "persec-small" / "config.json").is_file():
        models = [ROOT / "persec" / "shipped" / "persec-small"]
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", *sys.argv]),
        "machine": machine(),
    }
    meta["load_start"] = meta["machine"]["load_average"]
    clock = cpu_clock()
    datasets = {}
    for name in args.datasets:
        if name == HARD:
            datasets[name] = hard_dataset(args.out, args.hard_n)
        else:
            datasets[Path(name).name] = REAL.get(name, Path(name))
    data = {name: load_crops(path, args.limit) for name, path in datasets.items()}
    meta["datasets"] = {}
    for name, (images, _, skipped) in data.items():
        print(f"{name}: {len(images)} crops ({skipped} skipped)", file=sys.stderr)
        path = datasets[name].resolve()
        where = os.path.relpath(path, ROOT) if path.is_relative_to(ROOT.parent) else str(path)
        note = ""
        if name == HARD:
            note = (
                f"persec's hard preset in held-out font families, `persec render --hard "
                f"--split test --seed {HARD_SEED} --n {args.hard_n}`"
            )
        meta["datasets"][name] = {
            "path": where,
            "crops": len(images),
            "skipped": skipped,
            "note": note,
        }

    peers = make_peers(args.systems, models, args)
    results: dict[tuple[str, str], dict] = {}
    systems: dict[str, str] = {}  # name -> how it ran (or why it did not)
    pred_dir = args.out / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    for peer in peers:
        failure = None
        try:
            peer.load()
        except PeerUnavailable as e:
            failure = str(e)
        except Exception as e:
            failure = f"failed to load: {one_line(e)}"
        for name, (images, labels, _) in data.items():
            row = {"dataset": name, "system": peer.name, "load_s": peer.load_seconds}
            if failure is None:
                print(f"{peer.name} on {name} ...", file=sys.stderr)
                try:
                    scores, preds = run_one(peer, name, images, labels)
                    row.update(scores)
                    with open(pred_dir / f"{name}.{peer.slug}.tsv", "w") as f:
                        f.writelines(f"{g}\t{p}\n" for g, p in zip(labels, preds, strict=True))
                except Exception as e:
                    row["note"] = f"failed: {one_line(e)}"
            else:
                row["note"] = failure
            results[name, peer.name] = row
        try:
            systems[peer.name] = failure or peer.describe()
        except Exception as e:
            systems[peer.name] = f"(no description: {one_line(e)})"
        try:
            peer.close()
        except Exception as e:
            print(f"{peer.name}: close failed: {one_line(e)}", file=sys.stderr)
    rows = [results[name, peer.name] for name in data for peer in peers]
    meta["load_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["others_cpu_share"] = others_share(clock, cpu_clock(), meta["machine"]["cores"] or 1)
    meta["systems"] = systems
    text = report(rows, meta)
    write_outputs(args.out, rows, meta, text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
