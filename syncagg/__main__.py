"""``python -m syncagg``: the same command as the ``syncagg`` console script."""

from __future__ import annotations

import sys

from syncagg.cli import main

if __name__ == "__main__":
    sys.exit(main())
