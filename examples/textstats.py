"""Statistics of one line of text: the job function of ``cli_textstats.py``.

The ``syncagg`` command imports it by name as ``textstats:measure`` when it
runs from this folder.
"""

from __future__ import annotations

from typing import Any


def measure(line: str) -> dict[str, Any]:
    """Return the line with its word and character counts and its first word."""
    words = line.split()
    return {
        "line": line,
        "words": len(words),
        "characters": len(line),
        "first_word": words[0].lower() if words else "",
    }
