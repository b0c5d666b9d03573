"""``python -m tunesmith …`` runs the CLI (same as ``tunesmith …``)."""
import sys

from .cli import main

sys.exit(main())
