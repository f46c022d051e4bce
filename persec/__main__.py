"""``python -m persec``: the ``persec`` console script (:func:`persec.cli.main`)."""

import sys

from persec.cli import main

sys.exit(main())
