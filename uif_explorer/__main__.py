"""``python -m uif_explorer`` runs the CLI."""

import sys

from uif_explorer.cli import main

sys.exit(main())
