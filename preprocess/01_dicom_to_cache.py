"""Step 01: DICOM series -> cached windowed uint8 slice stacks (+ organ masks, manifest).

A thin caller of `volslice cache`: `python preprocess/01_dicom_to_cache.py --help` lists its options.
"""

import sys

from volslice.cli import main

if __name__ == "__main__":
    sys.exit(main(["cache", *sys.argv[1:]]))
