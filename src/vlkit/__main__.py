"""``python -m vlkit ...`` is the ``vlkit`` command; torchrun launches it as
``torchrun --nproc_per_node 2 -m vlkit pretrain CONFIG``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
