"""Where the time of a short ``persec finetune`` / ``persec pretrain`` goes, phase by phase.

For each command (the CPU configs, ``trainer.max_steps=3`` by default) a fresh Python
process imports what the CLI imports, loads the config and trains, marking each phase:
imports (torch, Lightning, persec's CLI), config, run set-up (precision, seeding, model,
data module, trainer), Lightning's fit set-up, the first batch (loader workers start,
fonts and words load, the first images render), each step, and the save. Then the
same command is timed end to end as a user runs it (``python -m persec ...``). The
CPU model and what ``trainer.precision=auto`` chose head the output. Usage::

    python benchmarks/startup.py                      # both commands, precision auto
    python benchmarks/startup.py --commands finetune --steps 5 trainer.precision=32-true
    python benchmarks/startup.py --cold-fonts         # an empty font cache, as a first run

Trailing ``key=value`` arguments are passed to both commands as overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"finetune": "configs/finetune/cpu-ctc.yaml", "pretrain": "configs/pretrain/cpu.yaml"}


def child(command: str, overrides: list[str]) -> None:
    """Run one command in this process and print its phase marks as JSON (last line)."""
    t0 = time.perf_counter()
    marks: list[tuple[str, float]] = []

    def mark(name: str) -> None:
        marks.append((name, time.perf_counter()))

    import torch

    mark("import torch")
    import lightning as L

    mark("import lightning")
    sys.path.insert(0, str(ROOT))
    from persec.cli import build_parser
    from persec.config import load_config

    build_parser()
    if command == "finetune":
        from persec.training.finetune import FinetuneConfig as Config
        from persec.training.finetune import finetune as train
    else:
        from persec.training.pretrain import PretrainConfig as Config
        from persec.training.pretrain import pretrain as train
    mark("import persec (CLI parser)")
    config = load_config(Config, ROOT / CONFIGS[command], overrides)
    mark("config")

    class Marks(L.Callback):
        def setup(self, trainer, pl_module, stage):
            mark("run set-up (precision, seed, model, data, trainer)")

        def on_train_start(self, trainer, pl_module):
            mark("Lightning fit set-up")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            mark("first batch ready" if batch_idx == 0 else f"batch {batch_idx + 1} ready")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            mark(f"step {batch_idx + 1}")

        def on_train_end(self, trainer, pl_module):
            mark("end of training")

    train(config, callbacks=[Marks()])
    mark("save outputs")
    phases, previous = [], t0
    for name, t in marks:
        phases.append({"phase": name, "seconds": t - previous})
        previous = t
    print(
        json.dumps(
            {
                "precision": config.trainer.precision,
                "threads": torch.get_num_threads(),
                "phases": phases,
            }
        )
    )


def _run(argv: list[str], env: dict) -> str:
    """stdout of ``python ARGV`` in the project root; exits with its stderr on failure."""
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def run_child(command: str, overrides: list[str], env: dict) -> dict:
    out = _run([__file__, "--child", command, *overrides], env)
    return json.loads(out.strip().splitlines()[-1])


def time_cli(command: str, overrides: list[str], env: dict) -> float:
    start = time.perf_counter()
    _run(["-m", "persec", command, "--config", CONFIGS[command], *overrides], env)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commands", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--cold-fonts", action="store_true", help="start from an empty font cache")
    p.add_argument("--child", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    if args.child:
        child(args.child, args.overrides)
        return

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from machine_info import cpu_model

    from persec.precision import cpu_bf16_support

    support = cpu_bf16_support()
    print(
        f"# {cpu_model(platform.processor())}, {len(os.sched_getaffinity(0))} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"# bf16: {'native' if support.native else 'not native'} ({support.reason})")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if args.cold_fonts:
            env["PERSEC_CACHE_DIR"] = str(Path(tmp) / "cache")
        for command in args.commands:
            overrides = [
                f"trainer.max_steps={args.steps}",
                "trainer.progress=false",
                *args.overrides,
            ]
            result = run_child(command, [*overrides, f"output_dir={tmp}/{command}-phases"], env)
            if args.cold_fonts:  # the end-to-end run starts cold too
                subprocess.run(["rm", "-rf", env["PERSEC_CACHE_DIR"]], check=True)
            wall = time_cli(command, [*overrides, f"output_dir={tmp}/{command}-cli"], env)
            total = sum(ph["seconds"] for ph in result["phases"])
            print(
                f"\n## persec {command} --config {CONFIGS[command]} "
                f"{' '.join(overrides)}: {result['precision']}, {result['threads']} threads"
            )
            print("| phase | seconds | cumulative |\n|---|--:|--:|")
            cumulative = 0.0
            for ph in result["phases"]:
                cumulative += ph["seconds"]
                print(f"| {ph['phase']} | {ph['seconds']:.2f} | {cumulative:.2f} |")
            print(f"| **in process, after Python started** | | **{total:.2f}** |")
            print(f"| **`python -m persec {command} ...`, wall** | | **{wall:.2f}** |")


if __name__ == "__main__":
    main()
