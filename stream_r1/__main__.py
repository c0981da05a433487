"""``python -m stream_r1`` (and ``torchrun -m stream_r1 train ...``)."""

import sys

from stream_r1.cli import main

sys.exit(main())
