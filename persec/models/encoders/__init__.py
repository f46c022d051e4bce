"""Text-image encoders. Importing the package registers every family in
:data:`~persec.models.encoders.base.ENCODERS`; a new one is a module here and its name
on the line below."""

from persec.models.encoders import resnet, vit  # noqa: F401  (each registers itself)
