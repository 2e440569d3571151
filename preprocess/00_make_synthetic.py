"""Step 00: write the synthetic RSNA 2023 ATD dataset (the embedded default and benchmark data).

A thin caller of `volslice synthetic`: `python preprocess/00_make_synthetic.py --help` lists its options.
"""

import sys

from volslice.cli import main

if __name__ == "__main__":
    sys.exit(main(["synthetic", *sys.argv[1:]]))
