"""``python -m dasrlib.train`` (and ``torchrun ... -m dasrlib.train``): see `dasrlib.train.cli`."""

import sys

from dasrlib.train.cli import main

sys.exit(main())
