import sys

from persec.cli import main

sys.exit(main())
