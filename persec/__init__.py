"""persec: self-supervised pretraining (PerSec) for scene-text recognition.

The Python API (the CLI's commands are thin layers over the same functions)::

    >>> import persec
    >>> model = persec.load_model()  # the shipped model; or persec.load_model("run/model")
    >>> [r.text for r in persec.read(model, ["../shared/data/real_demo/images/clovaai_demo_1.png"])]
    ['available']
    >>> [(s.name, s.samples) for s in persec.evaluate(model, ["../shared/data/real_demo"])]
    [('real_demo', 26)]
    >>> persec.pretrain("configs/pretrain/cpu.yaml", "trainer.max_steps=100")  # doctest: +SKIP
    >>> persec.finetune("configs/finetune/cpu-ctc.yaml", "init_encoder=...")  # doctest: +SKIP

Importing :mod:`persec` is cheap: the API loads the library (PyTorch, Lightning) on
first use.
"""

from persec._version import __version__

__all__ = ["__version__", "evaluate", "finetune", "load_model", "pretrain", "read"]


def __getattr__(name: str):
    if name in __all__:
        from persec import api

        return getattr(api, name)
    raise AttributeError(f"module 'persec' has no attribute {name!r}")
