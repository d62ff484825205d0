"""`paddle-cnn bench`: dispatch to the training, inference, from-scratch-ops or conv benchmark."""

from __future__ import annotations

import os
from pathlib import Path

from .. import runtime
from . import ops as bench_ops
from .common import environment, parse_models
from .inference import format_inference_table, parse_batches, run_inference_bench
from .training import format_table, run_bench


def run_bench_cli(args) -> int:
    """`paddle-cnn bench` with the parsed arguments: print the table, write --json if asked.

    Args:
        args: argparse namespace (models, batch, steps, repeats, json, no_torch, ops, conv, epoch,
            inference, batches).
    Returns:
        Exit code 0.
    """
    if args.ops:
        rows = bench_ops.run_ops_bench()
        print(bench_ops.format_ops_table(rows))
        result = {"ops": rows, "command": runtime.COMMAND}
    elif args.conv:
        rows = bench_ops.run_conv_bench(batch=args.batch)
        print(bench_ops.format_conv_table(rows))
        result = {"conv": rows, "batch": args.batch, "command": runtime.COMMAND, **environment(
            int(os.environ.get("OMP_NUM_THREADS") or 1))}
    elif args.inference:
        result = run_inference_bench(parse_models(args.models), parse_batches(args.batches), args.steps,
                                     args.repeats, with_torch=not args.no_torch)
        print(format_inference_table(result))
    else:
        specs = parse_models(args.models)
        result = run_bench(specs, args.batch, args.steps, args.repeats, with_torch=not args.no_torch,
                           epoch=args.epoch)
        print(format_table(result))
    if args.json:
        from ..fileio import write_json

        write_json(Path(args.json), result)
        print(f"written to {args.json}")
    return 0
