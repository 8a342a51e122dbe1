"""``python -m alphallm`` is the ``alphallm`` command."""

import sys

from alphallm.cli import main

sys.exit(main())
