"""``python -m dasrlib.campaign run --budget 140m [--set NAME=VALUE ...]`` and ``status``: see
`dasrlib.campaign.cli` (the same command as ``dasr campaign``)."""

import sys

from dasrlib.campaign.cli import main

sys.exit(main())
