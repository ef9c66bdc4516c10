"""Train an inpainting network: ``python train.py --train DIR --val DIR --out RUN_DIR``.

The same as the installed ``pconv-train`` command; see ``python train.py --help``.
"""

import sys

from pconv.train import main

if __name__ == "__main__":
    sys.exit(main())
