"""Step 02: patient-grouped, label-stratified folds -> CSV with a `fold` column (one row per series).

A thin caller of `volslice folds`: `python preprocess/02_make_folds.py --help` lists its options.
"""

import sys

from volslice.cli import main

if __name__ == "__main__":
    sys.exit(main(["folds", *sys.argv[1:]]))
