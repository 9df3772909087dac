"""``python -m metaedu ...`` is the ``metaedu`` command (what ``torchrun -m metaedu train ...`` starts)."""

import sys

from metaedu.cli import main

if __name__ == "__main__":
    sys.exit(main())
