"""``python -m indvision.synth KIND OUT_DIR [--seed N] [--per-class N]``."""

from indvision.synth.cli import main

raise SystemExit(main())
