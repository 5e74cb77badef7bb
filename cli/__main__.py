"""``python -m cli``: the same as the ``nn2pgm`` command."""

import sys

from .main import main

sys.exit(main())
