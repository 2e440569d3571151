"""Step 03: per-slice organ presence and 3D organ boxes for every cached series, from the
segmentation model (ground-truth masks kept where a series has them).

A thin caller of `volslice organs`: `python preprocess/03_predict_organs.py --help` lists its options.
"""

import sys

from volslice.cli import main

if __name__ == "__main__":
    sys.exit(main(["organs", *sys.argv[1:]]))
