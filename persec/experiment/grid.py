"""The grid of ``persec experiment``: its config, its cells, and :func:`plan`, which
resolves every cell's config before anything trains (so a bad override fails first).

A *cell* is one unit of cached work: a pretraining, a fine-tune with its evaluation, or
a frozen linear probe. Encoders come from three kinds of *source*: random init
(``scratch``), a pretraining's final encoder, or a snapshot the pretraining wrote on its
way (``snapshots``: the points of the pretraining-length curve).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persec.config import load_config
from persec.errors import ConfigError
from persec.experiment.keys import config_hash, key_json
from persec.models.recognizer import ENCODER_CONFIG, ENCODER_WEIGHTS, read_encoder_config
from persec.training.callbacks import snapshot_dir
from persec.training.probe import ProbeConfig

PROTOCOLS = ("frozen", "semi")
SCRATCH = "scratch"
DONE = "done.json"


@dataclass
class ExperimentConfig:
    """One grid of the label-efficiency experiment (``configs/experiments/*.yaml``).

    Attributes:
        name: shown in reports.
        output_dir: where cells, data and results go.
        report_dir: where ``results.csv``, ``results.md`` and the plots go (empty =
            ``output_dir``); lets a second grid (e.g. ablations) share the cells of a
            first one in the same ``output_dir`` without overwriting its reports.
        archive_dir: where every finished cell's small files are copied (empty = not
            kept), to be committed; a later run on a fresh machine restores the
            fine-tunes and probes found there (:mod:`persec.experiment.archive`).
        pretrain_config: base ``persec pretrain`` config shared by every method.
        pretrain: overrides applied to it for every method (the shared budget: steps,
            minutes, data, seed).
        methods: method name -> extra pretraining overrides, e.g. ``{scratch: [],
            seqclr: [objective=seqclr], persec: []}``; the name ``scratch`` means random
            init (no pretraining).
        encoders: method name -> an encoder pretrained elsewhere (``encoder.safetensors``
            or its directory, with ``encoder.json``): fine-tuned like the others, not
            pretrained here (e.g. a longer pretraining run to compare with).
        finetune_configs: decoder name -> base ``persec finetune`` config.
        finetune: overrides applied to every fine-tune (the shared budget and the
            labelled pool, e.g. ``data.synth_train=10000 data.synth_seed=1``).
        frozen: extra overrides for the frozen protocol only (after ``finetune``): a
            decoder trained alone on fixed features usually wants another learning rate.
        decoders: which entries of ``finetune_configs`` to run.
        protocols: ``frozen`` (decoder evaluation: encoder frozen) and/or ``semi``
            (whole model fine-tuned).
        fractions: label fractions of the labelled pool, for every protocol.
        frozen_fractions: fractions for the frozen protocol when it should differ
            (empty = ``fractions``; SeqCLR's decoder evaluation uses all labels: [1.0]).
        seeds: ``trainer.seed`` of the fine-tunes; every fine-tune cell runs once per
            seed (model init, batch order; the labelled subset stays the same), and the
            report gives mean ± std over them.
        snapshots: pretraining steps (below ``trainer.max_steps``) after which every
            pretraining also writes its encoder; with the final encoder and random init
            they are the points of the pretraining-length curve.
        curve_fractions: label fractions fine-tuned (``semi``, the first decoder) from
            every snapshot; the final encoder's point is the grid's own cell.
        curve_seeds: seeds of those fine-tunes (empty = the first of ``seeds``).
        probe: the frozen linear CTC probe on cached features (:mod:`persec.training.probe`),
            run on every encoder of the grid (random init, snapshots, final) when
            ``probe.train_images > 0``; its rows have protocol ``probe``. The leak test
            is left to the pretraining diagnostics.
        test: real test sets (dataset folders or folders of them); missing paths are
            skipped with a warning so configs stay portable.
        synth_test: size of the rendered held-out-font test set (0 = none).
        synth_test_seed: its renderer seed (apart from every training/validation seed).
        synth_test_hard: render it with the hard preset.
        eval_batch_size: images per forward pass when testing.
    """

    name: str = "experiment"
    output_dir: str = "runs/experiments/experiment"
    report_dir: str = ""
    archive_dir: str = ""
    pretrain_config: str = "configs/pretrain/cpu.yaml"
    pretrain: list[str] = field(default_factory=list)
    # Empty by default: YAML mappings merge into defaults, so a default grid here
    # could not be narrowed by a config file.
    methods: dict[str, list[str]] = field(default_factory=dict)
    encoders: dict[str, str] = field(default_factory=dict)
    finetune_configs: dict[str, str] = field(
        default_factory=lambda: {
            "ctc": "configs/finetune/cpu-ctc.yaml",
            "attn": "configs/finetune/cpu-attn.yaml",
        }
    )
    finetune: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    decoders: list[str] = field(default_factory=lambda: ["ctc"])
    protocols: list[str] = field(default_factory=lambda: ["frozen", "semi"])
    fractions: list[float] = field(default_factory=lambda: [0.1, 1.0])
    frozen_fractions: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    snapshots: list[int] = field(default_factory=list)
    curve_fractions: list[float] = field(default_factory=list)
    curve_seeds: list[int] = field(default_factory=list)
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(leak=False))
    test: list[str] = field(default_factory=list)
    synth_test: int = 1000
    synth_test_seed: int = 7
    synth_test_hard: bool = False
    eval_batch_size: int = 128


@dataclass
class Cell:
    """One unit of work, or (``external``, ``snapshot``) an encoder source.

    Attributes:
        kind: ``pretrain``, ``finetune``, ``probe``, ``external`` (an encoder
            pretrained elsewhere) or ``snapshot`` (one written by a pretraining cell).
        method: the method's name in the grid.
        directory: where the cell's outputs (or the source's encoder) live.
        config: PretrainConfig, FinetuneConfig, ProbeConfig, or the source's
            EncoderConfig.
        pretrain: the encoder source a fine-tune or probe starts from (None: random).
        steps: pretraining steps of a snapshot.
        seed: ``trainer.seed`` of a fine-tune; the random encoder's seed for a probe.
        key: external encoders: the hash of their weights.
    """

    kind: str
    method: str
    directory: Path
    config: Any
    decoder: str = ""
    protocol: str = ""
    fraction: float = 1.0
    pretrain: Cell | None = None
    steps: int = 0
    seed: int = 0
    key: str = ""

    @property
    def done(self) -> bool:
        """Whether the cell is finished: its ``done.json`` exists (for an ``external``
        or ``snapshot`` source, its encoder weights)."""
        if self.kind in ("external", "snapshot"):
            return (self.directory / ENCODER_WEIGHTS).is_file()
        return (self.directory / DONE).is_file()

    @property
    def label(self) -> str:
        """The cell's name in progress lines and ``done.json``, e.g. ``pretrain persec``,
        ``probe persec@2000`` or ``finetune persec ctc frozen 0.1 seed 0``."""
        if self.kind == "pretrain":
            return f"pretrain {self.method}"
        source = self.method + (f"@{self.pretrain.steps}" if _is_snapshot(self.pretrain) else "")
        if self.kind == "probe":
            return f"probe {source}"
        return (
            f"finetune {source} {self.decoder} {self.protocol} {self.fraction:g} seed {self.seed}"
        )


def _is_snapshot(cell: Cell | None) -> bool:
    return cell is not None and cell.kind == "snapshot"


def check(config: ExperimentConfig) -> None:
    """Raise :class:`ConfigError` naming the first inconsistent setting."""
    if not config.methods and not config.encoders:
        raise ConfigError("experiment: methods and encoders are both empty")
    both = set(config.methods) & set(config.encoders)
    if both:
        raise ConfigError(f"experiment: {', '.join(sorted(both))} in both methods and encoders")
    for decoder in config.decoders:
        if decoder not in config.finetune_configs:
            raise ConfigError(
                f"experiment: decoder {decoder!r} has no entry in finetune_configs "
                f"(have: {', '.join(config.finetune_configs) or 'none'})"
            )
    for protocol in config.protocols:
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"experiment: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}"
            )
    for f in [*config.fractions, *config.frozen_fractions, *config.curve_fractions]:
        if not 0.0 < f <= 1.0:
            raise ConfigError(f"experiment: label fraction must be in (0, 1], got {f}")
    if not config.seeds:
        raise ConfigError("experiment: seeds is empty (give at least one, e.g. [0])")
    if any(s < 1 for s in config.snapshots):
        raise ConfigError(f"experiment: snapshots must be steps >= 1, got {config.snapshots}")
    if config.curve_fractions and not config.decoders:
        raise ConfigError("experiment: curve_fractions needs a decoder")


def plan(config: ExperimentConfig) -> list[Cell]:
    """Every cell of the grid, pretrainings first, then probes, then fine-tunes;
    configs are resolved (so a bad override fails here, before any training)."""
    from persec.objectives.registry import OBJECTIVES
    from persec.training.finetune import FinetuneConfig
    from persec.training.pretrain import SNAPSHOTS, PretrainConfig

    check(config)
    out = Path(config.output_dir)
    try:
        # Random init uses the encoder every method pretrains (same architecture).
        base_pretrain = load_config(PretrainConfig, config.pretrain_config, config.pretrain)
    except ConfigError as e:
        raise ConfigError(f"experiment: pretraining: {e}") from e
    finals: dict[str, Cell | None] = {}
    snapshots: list[Cell] = []
    cells: list[Cell] = []
    for method, overrides in config.methods.items():
        if method == SCRATCH:
            finals[method] = None
            continue
        try:
            pc = load_config(PretrainConfig, config.pretrain_config, [*config.pretrain, *overrides])
        except ConfigError as e:
            raise ConfigError(f"experiment: method {method}: {e}") from e
        if pc.objective not in OBJECTIVES:
            raise ConfigError(
                f"experiment: method {method}: objective must be one of "
                f"{', '.join(OBJECTIVES)}, got {pc.objective!r}"
            )
        pc.snapshots = sorted({s for s in config.snapshots if s < pc.trainer.max_steps})
        directory = out / "pretrain" / f"{method}-{config_hash(pc)}"
        pc.output_dir = str(directory)
        cell = Cell("pretrain", method, directory, pc, steps=pc.trainer.max_steps)
        finals[method] = cell
        cells.append(cell)
        snapshots += [
            Cell(
                "snapshot",
                method,
                snapshot_dir(directory / SNAPSHOTS, s),
                pc.model,
                pretrain=cell,
                steps=s,
            )
            for s in pc.snapshots
        ]
    for method, path in config.encoders.items():
        finals[method] = _external_encoder(method, path)

    if config.probe.train_images > 0:
        for method, source in [*finals.items(), *((s.method, s) for s in snapshots)]:
            probe = copy.deepcopy(config.probe)
            # A random encoder is drawn from the seed; a pretrained one is its weights.
            seed = f"seed{config.seeds[0]}" if source is None else ""
            key = config_hash(
                probe,
                extra=_source_key(source)
                + key_json(encoder_config(source, base_pretrain.model))
                + seed,
            )
            name = f"{method}-{_steps_tag(source)}{key}"
            cells.append(
                Cell(
                    "probe",
                    method,
                    out / "probe" / name,
                    probe,
                    pretrain=source,
                    seed=config.seeds[0],
                )
            )

    seen: set[Path] = set()

    def add_finetune(base, decoder, protocol, fraction, method, source, seed) -> None:
        fc = copy.deepcopy(base)
        fc.data.label_fraction = fraction
        fc.freeze_encoder = protocol == "frozen"
        fc.trainer.seed = seed
        # Every method fine-tunes the encoder architecture it pretrained.
        fc.model.encoder = copy.deepcopy(encoder_config(source, base_pretrain.model))
        key = config_hash(fc, extra=_source_key(source))
        name = f"{method}-{_steps_tag(source)}{decoder}-{protocol}-{fraction:g}-s{seed}-{key}"
        directory = out / "finetune" / name
        if directory in seen:
            return
        seen.add(directory)
        fc.init_encoder = str(source.directory / ENCODER_WEIGHTS) if source else ""
        fc.output_dir = str(directory)
        cells.append(
            Cell("finetune", method, directory, fc, decoder, protocol, fraction, source, seed=seed)
        )

    bases: dict[tuple[str, str], Any] = {}
    for decoder in config.decoders:
        # The curve fine-tunes use the semi base; build it once even when listed twice.
        wanted = [*config.protocols, *(["semi"] if config.curve_fractions else [])]
        for protocol in dict.fromkeys(wanted):
            overrides = list(config.finetune)
            if protocol == "frozen":
                overrides += config.frozen
            try:
                bases[decoder, protocol] = load_config(
                    FinetuneConfig, config.finetune_configs[decoder], overrides
                )
            except ConfigError as e:
                raise ConfigError(f"experiment: decoder {decoder}: {e}") from e
    for decoder in config.decoders:
        for protocol in config.protocols:
            fractions = config.fractions
            if protocol == "frozen" and config.frozen_fractions:
                fractions = config.frozen_fractions
            for fraction in fractions:
                for seed in config.seeds:
                    for method, source in finals.items():
                        base = bases[decoder, protocol]
                        add_finetune(base, decoder, protocol, fraction, method, source, seed)
    if config.curve_fractions:
        decoder = config.decoders[0]
        for fraction in config.curve_fractions:
            for seed in config.curve_seeds or config.seeds[:1]:
                for method, source in [*finals.items(), *((s.method, s) for s in snapshots)]:
                    base = bases[decoder, "semi"]
                    add_finetune(base, decoder, "semi", fraction, method, source, seed)
    return cells


def encoder_config(source: Cell | None, random_init: Any) -> Any:
    """The EncoderConfig of a source (``random_init`` for random init)."""
    if source is None:
        return random_init
    if source.kind == "pretrain":
        return source.config.model
    return source.config  # external and snapshot sources hold their EncoderConfig


def write_done(cell: Cell, payload: dict) -> None:
    """Mark a cell finished: ``done.json`` with its results, written atomically."""
    payload = {"cell": cell.label, "method": cell.method, **payload}
    tmp = cell.directory / (DONE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(cell.directory / DONE)


def read_done(cell: Cell) -> dict:
    """The results a finished cell wrote."""
    return json.loads((cell.directory / DONE).read_text())


def _steps_tag(source: Cell | None) -> str:
    return f"p{source.steps}-" if _is_snapshot(source) else ""


def _external_encoder(method: str, path: str) -> Cell:
    """A pseudo-cell for an encoder pretrained elsewhere (always "done")."""
    directory = Path(path)
    if directory.is_file():
        directory = directory.parent
    weights, meta = directory / ENCODER_WEIGHTS, directory / ENCODER_CONFIG
    if not weights.is_file() or not meta.is_file():
        raise ConfigError(
            f"experiment: encoders.{method}: {directory} holds no {ENCODER_WEIGHTS} + "
            f"{ENCODER_CONFIG} (give a `persec pretrain` output directory)"
        )
    model = read_encoder_config(meta)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    return Cell("external", method, directory, model, key=digest)


def _source_key(source: Cell | None) -> str:
    """What a cell's cache key depends on besides its own config."""
    if source is None:
        return SCRATCH
    if source.kind == "external":  # the weights themselves, wherever they live
        return source.key
    if source.kind == "snapshot":
        return f"{source.pretrain.directory.name}/step-{source.steps}"
    return source.directory.name
