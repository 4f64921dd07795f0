"""``python -m harness.figures images ...`` (``harness.figures.images``)."""
import sys

from .images import main

sys.exit(main())
