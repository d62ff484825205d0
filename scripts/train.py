#!/usr/bin/env python
"""Train from a config: `python scripts/train.py --config FILE [-o key=value ...]`.

A thin wrapper over `paddle-cnn train` (same code path, same options).
"""

import argparse
import sys

from paddle_cnn.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config file")
    args, rest = parser.parse_known_args()
    sys.exit(main(["train", args.config, *rest]))
