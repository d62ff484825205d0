"""`paddle-cnn bench`: speed of training (common, training), inference (inference), the from-scratch
operators and fast_conv's layers (ops), against PyTorch twins (torch_twins) and numpy's sgemm.

cli.run_bench_cli dispatches; numbers come only from runs on the CPU at hand (see docs/speed.md).
"""
