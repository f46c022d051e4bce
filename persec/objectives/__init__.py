"""Pretraining objectives and their parts. Importing the package registers every
objective in :data:`~persec.objectives.registry.OBJECTIVES`; a new one is a module
here and its name on the line below."""

from persec.objectives import persec, seqclr  # noqa: F401  (each registers itself)
