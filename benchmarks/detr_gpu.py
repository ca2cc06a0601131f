"""The GPU recipe of the DAC benchmark (issue 15, item 5): ``benchmarks/detr_dac.py --preset gpu`` with 6 runs
at once on one GPU (256 px, 10-30 objects, 300 queries, d 256, 6+6 layers, 4 levels, bfloat16; aimed at about
10 minutes per comparison on one large GPU).

Run: python benchmarks/detr_gpu.py [--seeds 3] [--out runs/detr-dac-gpu]
"""

from __future__ import annotations

import sys

from detr_dac import main

if __name__ == "__main__":
    raise SystemExit(main(["--preset", "gpu", "--jobs", "6", "--seeds", "3", *sys.argv[1:]]))
