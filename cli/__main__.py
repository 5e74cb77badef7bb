"""``python -m cli``: the same as the ``nn2pgm`` command."""

from .main import entry

entry()
