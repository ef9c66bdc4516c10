"""Inpaint an image: ``python predict.py --image photo.jpg --mask holes.png --out filled.png``.

The same as the installed ``pconv-predict`` command; see ``python predict.py --help``.
"""

import sys

from pconv.predict import main

if __name__ == "__main__":
    sys.exit(main())
