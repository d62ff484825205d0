"""Command line: `paddle-cnn train|evaluate|report|compare|runs|bench|board|predict|export`.

Every command reads its config before paddle is imported, runs runtime.setup() (threads, MKL
switch), and only then imports the modules that import paddle. Errors the user can fix print as
one paragraph with exit code 2; --debug shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from pathlib import Path

from . import rundir, runtime
from .errors import RunDirError, UserError
from .fileio import check_output_dir, check_output_file
from .signals import EXIT_INTERRUPTED

EXIT_USER_ERROR = 2
EXIT_OS_ERROR = 1


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. -o optimizer.lr=0.05 (repeatable)")


def _output_args(p: argparse.ArgumentParser, what: str, default: str) -> None:
    p.add_argument("--output-dir", help=f"{what} directory (default: {default})")
    p.add_argument("--overwrite", action="store_true", help=f"replace a {what} directory that already holds one")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(prog="paddle-cnn", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_run_commands(sub)
    _add_tool_commands(sub)
    _add_deploy_commands(sub)
    return parser


def _add_run_commands(sub) -> None:
    """train, evaluate, report, compare: commands that read configs and runs."""
    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", nargs="?", help="YAML config file")
    _config_args(p)
    _output_args(p, "run", "<output.dir>/<output.name or config name>")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last complete epoch")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run's best checkpoint, or an exported model (--model)")
    p.add_argument("run_dir", nargs="?", help="run directory (or give --model)")
    _model_args(p)
    p.add_argument("--split", choices=["test", "dev"], default="test")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="print paddle.summary and paddle.flops for a config's model")
    p.add_argument("config")
    _config_args(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="train variants of a base config side by side and compare them")
    p.add_argument("config", help="comparison YAML (base:, vary: or variants:, seeds:)")
    _config_args(p)
    _output_args(p, "comparison", "<output.dir>/<comparison name>")
    p.add_argument("--resume", action="store_true", help="keep finished variant runs and resume unfinished ones")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("runs", help="one table of every run and comparison under a folder (status, accuracy, time)")
    p.add_argument("dir", nargs="?", default="outputs", help="folder of runs (default: outputs)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=cmd_runs)


def _model_args(p: argparse.ArgumentParser) -> None:
    """--model and --no-onednn of evaluate and predict."""
    p.add_argument("--model", metavar="DIR", help="an export folder (`paddle-cnn export`): run it through "
                   "paddle.inference, reading nothing else (no config, no checkpoint)")
    p.add_argument("--no-onednn", action="store_true", help="with --model on CPU: do not use oneDNN kernels")


def _add_deploy_commands(sub) -> None:
    """export (evaluate and predict take --model, see _model_args)."""
    p = sub.add_parser("export", help="export a run as a paddle.inference model, checked against the eager model")
    p.add_argument("run_dir")
    p.add_argument("--output", metavar="DIR", help="export folder (default: RUN_DIR/inference)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="best dev accuracy (default) or the last completed epoch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export (atomically)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (paddle2onnx, the `onnx` extra), "
                   "checked with onnxruntime like the predictor")
    p.set_defaults(func=cmd_export)


def _add_tool_commands(sub) -> None:
    """bench, board, predict."""
    p = sub.add_parser("bench", help="training images/s of the real training step vs PyTorch and sgemm "
                                     "(--inference: evaluation speed of eager vs paddle.inference)")
    p.add_argument("--models", default="lenet,resnet18,resnet18_plain",
                   help="comma-separated registry names, optionally name:stem (e.g. resnet18:cifar)")
    p.add_argument("--batch", type=int, default=128, help="images per training step")
    p.add_argument("--steps", type=int, default=10, help="timed steps per repetition")
    p.add_argument("--repeats", type=int, default=3, help="repetitions; the median is reported")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")
    instead = p.add_mutually_exclusive_group()
    instead.add_argument("--ops", action="store_true", help="time the from-scratch operators against paddle's instead")
    instead.add_argument("--conv", action="store_true",
                         help="time fast_conv's batch-GEMM conv against paddle's, forward+backward, per layer "
                              "shape (uses --batch; its own 5 repeats; --models/--steps/--epoch do not apply)")
    instead.add_argument("--inference", action="store_true",
                         help="time evaluation instead: eager no_grad vs the paddle.inference predictor with and "
                              "without oneDNN (and PyTorch eval if installed), at each --batches size")
    p.add_argument("--batches", default="1,128", help="with --inference: comma-separated batch sizes")
    p.add_argument("--epoch", action="store_true",
                   help="also time one fit epoch of 2048 random in-memory images through the real data loader")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("board", help="start VisualDL on the runs (127.0.0.1 only unless --host is given)")
    p.add_argument("logdir", nargs="?", default="outputs", help="folder of runs (default: outputs)")
    p.add_argument("--port", default="8040", help="port, or 0 for a free one")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes it to the network")
    p.add_argument("--language", default="en", choices=["en", "zh"], help="UI language")
    p.set_defaults(func=cmd_board)

    p = sub.add_parser("predict", help="predict with a run's best checkpoint, or an exported model (--model)")
    p.add_argument("run_dir", nargs="?", help="run directory (or give --model)")
    _model_args(p)
    p.add_argument("--images", nargs="+", metavar="PATH", help="image files (PNG/JPG, any size, grey or colour)")
    p.add_argument("--split", choices=["test", "dev"], default="test", help="dataset split when no --images")
    p.add_argument("--count", type=int, default=16, help="dataset samples to show")
    p.set_defaults(func=cmd_predict)



def main(argv: list[str] | None = None) -> int:
    """Entry point of the `paddle-cnn` command.

    Args:
        argv: arguments (default sys.argv[1:]).
    Returns:
        Process exit code.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    runtime.COMMAND[:] = ["paddle-cnn", *argv]
    if runtime.world_size() > 1:  # under paddle.distributed.launch stdout is the rank's log file: keep it live
        sys.stdout.reconfigure(line_buffering=True)
    # cpp_extension warns on import that ccache is missing: it only speeds rebuilds of the oneDNN operator.
    warnings.filterwarnings("ignore", message="No ccache found")
    # BatchNorm says on every training run that it tracks global statistics: true, expected, not actionable.
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # `paddle-cnn runs | head`: the reader has all it wanted; point stdout at /dev/null so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # The checks above name the usual causes in advance; this catches what the file system
        # still refuses mid-run (disk full, a folder deleted or made read-only meanwhile).
        if args.debug:
            raise
        print(f"error: {args.command}: the file system refused an operation: {exc}. Files are "
              f"replaced atomically, so none is half-written; fix the cause and run again (--debug shows "
              f"where it happened).", file=sys.stderr)
        return EXIT_OS_ERROR


def _setup_runtime(rt) -> None:
    """runtime.setup with what a config's runtime section asks for (threads, malloc policy)."""
    runtime.setup(rt.threads, keep_freed_memory=rt.keep_freed_memory)


def _load(config: str, overrides: list[str]):
    from .config import load_config

    cfg = load_config(config, overrides)
    _setup_runtime(cfg.runtime)
    return cfg


def default_run_dir(cfg, config_path: str) -> Path:
    """Where a run goes when --output-dir is not given.

    Args:
        cfg: the config.
        config_path: the config file (its stem names the run unless output.name is set).
    Returns:
        The run directory path.
    """
    return Path(cfg.output.dir) / (cfg.output.name or Path(config_path).stem)


def _resume_config(run_dir: Path, overrides: list[str]):
    """The saved config of a run plus overrides; overrides that change the model or data are refused."""
    from .config import load_config, to_dict

    if not (run_dir / rundir.CONFIG).is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no config.yaml), so there is nothing to resume; "
                          f"start a run with `paddle-cnn train CONFIG`.")
    saved = load_config(run_dir / rundir.CONFIG)
    cfg = load_config(run_dir / rundir.CONFIG, overrides)
    for section in ("data", "model"):
        if to_dict(getattr(cfg, section)) != to_dict(getattr(saved, section)):
            raise RunDirError(f"--resume: overrides may not change {section}.* of a run ({run_dir}); "
                              f"start a new run instead.")
    results = rundir.read_results(run_dir) or {}
    _refuse_early_stopped(run_dir, cfg, saved, results)
    done = results.get("epochs_completed", 0)
    if results.get("status") == "finished" and cfg.train.epochs <= done:
        raise RunDirError(f"{run_dir} already finished its {done} epochs. To train it further, raise train.epochs: "
                          f"`paddle-cnn train --resume {run_dir} -o train.epochs={done + 10}`.")
    return cfg


def _refuse_early_stopped(run_dir: Path, cfg, saved, results: dict) -> None:
    """Refuse to resume an early-stopped run unless patience or train.epochs were raised (it would stop at once)."""
    if results.get("status") != "finished" or not results.get("stopped_early"):
        return
    old, new = saved.train.early_stopping.patience, cfg.train.early_stopping.patience
    if new is None or (old is not None and new > old) or cfg.train.epochs > saved.train.epochs:
        return
    raise RunDirError(f"{run_dir} stopped early after epoch {results.get('stopped_epoch')} of {saved.train.epochs}: "
                      f"{results.get('stop_reason')}. Resumed as it is, it would stop again at once. To train it "
                      f"further, raise the patience (`-o train.early_stopping.patience={(old or 0) + 5}`; the epochs "
                      f"counted without improvement are kept), raise train.epochs (`-o train.epochs="
                      f"{saved.train.epochs + 10}`; a new patience window starts), or turn early stopping off "
                      f"(`-o train.early_stopping.patience=null`).")


def _check_model(cfg) -> None:
    """Refuse an unknown model name, option or option type before a run directory is made and the data is read.

    load_config cannot do this: the factories' signatures live in the model modules, which import
    paddle, and paddle must not load before runtime.setup(). So every command calls this right after it.

    Args:
        cfg: the run config.
    """
    from .registry import check_model_config

    check_model_config(cfg.model)  # raises, naming the option and the valid ones


def _resume_command(run_dir: Path) -> str:
    """The command that resumes run_dir, with the launcher when this run had more than one process."""
    world = runtime.world_size()
    if world == 1:
        return f"paddle-cnn train --resume {run_dir}"
    return (f"python -m paddle.distributed.launch --nproc_per_node {runtime.local_world_size()} "
            f"$(which paddle-cnn) train --resume {run_dir}  (any number of processes works: the batch is global)")


def cmd_train(args) -> int:
    """`paddle-cnn train`: train (or resume), print where the run lives."""
    if bool(args.config) == bool(args.resume):
        raise UserError("train needs exactly one of CONFIG or --resume RUN_DIR.")
    if args.resume and (args.output_dir or args.overwrite):
        raise UserError("--resume continues the run where it is: --output-dir and --overwrite do not apply to it.")
    ours, replaced = False, None
    if args.resume:
        run_dir = Path(args.resume)
        cfg = _resume_config(run_dir, args.override)
        _setup_runtime(cfg.runtime)
    else:
        cfg = _load(args.config, args.override)
        _check_model(cfg)
        run_dir = Path(args.output_dir) if args.output_dir else default_run_dir(cfg, args.config)
        if runtime.rank() == 0:  # data-parallel: rank 0 alone prepares and writes the run directory
            ours = not run_dir.exists() or args.overwrite
            replaced = rundir.prepare(run_dir, args.overwrite)
    from . import engine

    try:
        results = engine.train(cfg, run_dir, resume=bool(args.resume))
    except BaseException as exc:
        undone = rundir.settle(run_dir, ours, replaced)
        if not isinstance(exc, KeyboardInterrupt):
            raise
        print("\ninterrupted before the run wrote anything; nothing to resume." if undone else
              f"\ninterrupted: progress up to the last complete epoch is kept in {run_dir}.\n"
              f"resume with: {_resume_command(run_dir)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if replaced is not None and replaced.exists():
            shutil.rmtree(replaced)
    print(f"test accuracy {100 * results['test_acc']:.2f}% on {results['test_samples']} images "
          f"(best epoch {results['best_epoch']}, {results['wall_seconds']:.0f} s)\nrun directory: {run_dir}")
    return 0


def _run_or_model(args) -> None:
    """Refuse evaluate/predict without exactly one of RUN_DIR and --model."""
    if bool(args.run_dir) == bool(args.model):
        raise UserError(f"{args.command} needs exactly one of RUN_DIR (a run's checkpoint) or --model DIR "
                        f"(an export folder).")
    if args.no_onednn and not args.model:
        raise UserError("--no-onednn applies to --model (paddle.inference) only.")


def cmd_evaluate(args) -> int:
    """`paddle-cnn evaluate`: reload the best checkpoint (or an export) and evaluate it."""
    _run_or_model(args)
    runtime.setup()
    if args.model:
        from .inference import evaluate_model

        r = evaluate_model(Path(args.model), args.split, onednn=not args.no_onednn)
        print(f"{args.split}: loss {r['loss']:.4f}  accuracy {100 * r['acc']:.2f}% on {r['samples']} images "
              f"(paddle.inference, oneDNN {'on' if r['onednn'] else 'off'}; confusion matrix in {args.model})")
        return 0
    from .evaluate import evaluate_run

    r = evaluate_run(Path(args.run_dir), args.split)
    print(f"{args.split}: loss {r['loss']:.4f}  accuracy {100 * r['acc']:.2f}% on {r['samples']} images "
          f"(written to {Path(args.run_dir) / rundir.RESULTS})")
    return 0


def cmd_report(args) -> int:
    """`paddle-cnn report`: model summary and MACs without training."""
    cfg = _load(args.config, args.override)
    from .data import input_size
    from .network import build_network
    from .report import model_report

    size = input_size(cfg.data)
    text, _ = model_report(build_network(cfg), (cfg.model.in_channels, size, size))
    print(text)
    return 0


def cmd_compare(args) -> int:
    """`paddle-cnn compare`: run every variant and seed, then write the comparison."""
    from .compare import load_comparison

    comparison = load_comparison(args.config, args.override)
    _setup_runtime(comparison.base.runtime)
    comparison.check_models()  # before the comparison directory is made
    from .compare import run_comparison

    out_dir = check_output_dir(Path(args.output_dir) if args.output_dir else comparison.default_dir(),
                               "comparison", "--output-dir")
    try:
        summary = run_comparison(comparison, out_dir, overwrite=args.overwrite, resume=args.resume)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished variants are kept in {out_dir}.\n"
              f"resume with: paddle-cnn compare {args.config} --output-dir {out_dir} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary)
    return 0


def cmd_runs(args) -> int:
    """`paddle-cnn runs`: list the runs under a folder from their files (paddle is not imported)."""
    from .runs import run_runs

    return run_runs(args.dir, args.json)


def cmd_bench(args) -> int:
    """`paddle-cnn bench`: speed of the real training step against PyTorch and numpy's sgemm."""
    if args.json:
        check_output_file(args.json, "benchmark results", "--json")
    runtime.setup()
    from .bench.cli import run_bench_cli

    return run_bench_cli(args)


def cmd_board(args) -> int:
    """`paddle-cnn board`: serve the VisualDL logs."""
    runtime.setup()
    from .board import run_board

    return run_board(args.logdir, args.host, args.port, args.language)


def cmd_predict(args) -> int:
    """`paddle-cnn predict`: predictions of a run's best checkpoint (or an export)."""
    _run_or_model(args)
    runtime.setup()
    if args.model:
        from .inference import predict_model

        return predict_model(Path(args.model), args.images, args.split, args.count, onednn=not args.no_onednn)
    from .predict import run_predict

    return run_predict(args)


def cmd_export(args) -> int:
    """`paddle-cnn export`: the run's checkpoint as an inference model, after a parity check."""
    runtime.setup()
    from .export import export_run

    export_run(Path(args.run_dir), Path(args.output) if args.output else None, args.checkpoint, args.overwrite,
               onnx=args.onnx)
    return 0
