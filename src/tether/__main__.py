"""``python -m tether`` runs the command line."""

import sys

from tether.cli import main

sys.exit(main())
