"""``python -m indvision.pipeline``: the command line (:mod:`indvision.pipeline.cli`)."""

import sys

from indvision.pipeline.cli import main

sys.exit(main())
