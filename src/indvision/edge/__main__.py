"""``python -m indvision.edge ...``: the edge command line (:mod:`indvision.edge.cli`)."""

import sys

from indvision.edge.cli import main

if __name__ == "__main__":
    sys.exit(main())
