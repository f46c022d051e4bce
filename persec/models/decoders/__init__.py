"""Recognition heads over the encoder sequence. Importing the package registers every
head in :data:`~persec.models.decoders.base.DECODERS`; a new one is a module here and
its name on the line below."""

from persec.models.decoders import attn, ctc  # noqa: F401  (each registers itself)
