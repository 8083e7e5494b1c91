"""``python -m syncagg`` and the ``syncagg`` console script."""

from __future__ import annotations

import signal
import sys


def entry() -> int:
    """Import the command and run it; a Ctrl-C during the imports exits with status 130 quietly."""
    try:
        from syncagg.cli import main
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return main()


if __name__ == "__main__":
    sys.exit(entry())
