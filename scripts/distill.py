"""Entry point for `accelerate launch scripts/distill.py [--config FILE] [--teacher T] [--student S] [key=value ...]`.

The same as `kd distill ...`.
"""

import sys

from kd.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
