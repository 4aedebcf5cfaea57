"""``python -m tabdiff_jax``: the ``tabdiff-jax`` command line."""

import sys

from tabdiff_jax.cli import main

sys.exit(main())
