"""runtime.setup: thread count and MKL switch decided before paddle loads; user settings win."""

import json
import os
import platform
import signal
import subprocess
import sys

import pytest

from paddle_cnn import runtime


@pytest.fixture
def intel(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_vendor", lambda: "GenuineIntel")


def test_threads_default_to_available_cores(monkeypatch, intel):
    monkeypatch.setattr(runtime, "available_cores", lambda: 7)
    env = {}
    decisions = runtime.setup(environ=env)
    assert env["OMP_NUM_THREADS"] == "7"
    assert decisions["threads"] == 7 and decisions["threads_source"] == "all available cores"


def test_available_cores_follows_affinity():
    assert runtime.available_cores() == len(os.sched_getaffinity(0))


def test_user_threads_are_kept(intel):
    env = {"OMP_NUM_THREADS": "3"}
    decisions = runtime.setup(environ=env)
    assert env["OMP_NUM_THREADS"] == "3" and decisions["threads_source"] == "environment OMP_NUM_THREADS"


def test_config_threads_win_over_environment(intel):
    env = {"OMP_NUM_THREADS": "3"}
    decisions = runtime.setup(threads=5, environ=env)
    assert env["OMP_NUM_THREADS"] == "5" and decisions["threads_source"] == "config runtime.threads"


def test_setup_with_a_dict_leaves_the_process_alone(intel):
    before = (os.environ.get("OMP_NUM_THREADS"), dict(runtime.DECISIONS))
    runtime.setup(threads=9, environ={})
    assert (os.environ.get("OMP_NUM_THREADS"), dict(runtime.DECISIONS)) == before


@pytest.mark.parametrize("vendor,expected", [("AuthenticAMD", "5"), ("GenuineIntel", None), ("unknown", None)])
def test_mkl_switch_only_on_amd(monkeypatch, vendor, expected):
    monkeypatch.setattr(runtime, "cpu_vendor", lambda: vendor)
    env = {}
    decisions = runtime.setup(environ=env)
    assert env.get("MKL_DEBUG_CPU_TYPE") == expected
    assert decisions["cpu_vendor"] == vendor


def test_mkl_switch_never_overrides_the_user(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_vendor", lambda: "AuthenticAMD")
    env = {"MKL_DEBUG_CPU_TYPE": "4"}
    decisions = runtime.setup(environ=env)
    assert env["MKL_DEBUG_CPU_TYPE"] == "4" and decisions["mkl_debug_cpu_type_source"] == "environment"


def _env_without_threads() -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # conftest's setup put it into this process's environment
    return env


def test_fresh_process_gets_all_cores():
    code = ("from paddle_cnn import runtime; runtime.setup(); import paddle, os; "
            "print(os.environ['OMP_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env_without_threads(), check=True).stdout
    assert out.strip().splitlines()[-1] == str(len(os.sched_getaffinity(0)))


# Runs the real `python -m paddle_cnn report CONFIG` and reports, after it finished, the thread
# setting the process ran with and whether paddle had been imported before setup().
_REPORT_PROBE = """
import json, os, runpy, sys
sys.argv = ["paddle_cnn", "report", *sys.argv[1:]]
try:
    runpy.run_module("paddle_cnn", run_name="__main__")
finally:
    from paddle_cnn import runtime
    print("PROBE" + json.dumps({"omp": os.environ.get("OMP_NUM_THREADS"), **runtime.DECISIONS}))
"""


def test_report_command_runs_with_all_cores(write_config):
    proc = subprocess.run([sys.executable, "-c", _REPORT_PROBE, str(write_config())], capture_output=True,
                          text=True, timeout=180, env=_env_without_threads())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Total" in proc.stdout  # the report itself was printed
    probe = json.loads(proc.stdout.split("PROBE", 1)[1])
    cores = len(os.sched_getaffinity(0))
    assert probe["omp"] == str(cores) and probe["threads"] == cores
    assert probe["paddle_already_imported"] is False
    assert probe["malloc"].startswith("freed memory kept for reuse")  # the default


def test_the_config_can_leave_malloc_alone(write_config):
    proc = subprocess.run([sys.executable, "-c", _REPORT_PROBE, str(write_config()), "-o",
                           "runtime.keep_freed_memory=false"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.split("PROBE", 1)[1])["malloc"].startswith("glibc default")


def test_cli_output_is_free_of_paddles_thread_count_warning(tmp_path):
    """Paddle warns on import whenever OMP_NUM_THREADS > 1; the CLI sets it on purpose and drops that warning."""
    from conftest import REPO, run_cli

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["OMP_NUM_THREADS"] = "2"
    proc = run_cli("report", str(REPO / "configs" / "lenet_mnist.yaml"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "OMP_NUM_THREADS" not in proc.stderr and "61,706" in proc.stdout


def test_training_output_is_free_of_paddles_batchnorm_notice(write_config, tmp_path):
    import warnings

    from paddle_cnn.cli import main

    cfg = write_config(model={"name": "resnet18", "stem": "imagenet"}, data={"train_size": 50},
                       train={"epochs": 1, "batch_size": 25})
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # every warning reaches the record unless main() drops it
        assert main(["train", str(cfg), "--output-dir", str(tmp_path / "run")]) == 0
    messages = [str(w.message) for w in shown if issubclass(w.category, UserWarning)]
    assert not [m for m in messages if "track global mean" in m] and not messages, messages


def test_children_that_tests_interrupt_get_ctrl_c_even_when_the_suite_ignores_it():
    """Under `nohup pytest &` SIGINT and SIGHUP are ignored and inherited; conftest.popen gives them back."""
    from conftest import popen

    code = ("import signal, sys; sys.exit(signal.getsignal(signal.SIGINT) is signal.default_int_handler "
            "and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL)")
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGHUP)}
    try:
        inherited = subprocess.run([sys.executable, "-c", code]).returncode
        restored = popen([sys.executable, "-c", code]).wait(timeout=60)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    assert inherited == 0, "a child of a process that ignores SIGINT should inherit the ignore"
    assert restored == 1


# Allocates and frees a touched 200 MB block and prints the policy and the resident memory (MB)
# before the block is freed and after.
_MALLOC_PROBE = """
import sys
import numpy as np
from paddle_cnn import runtime
print(runtime.keep_freed_memory_policy(sys.argv[1] == "on"))
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
block = np.ones(50 * 2**20, dtype=np.float32)
held = rss_mb()
del block
print(held, rss_mb())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.parametrize("enabled", [True, False])
def test_freed_large_blocks_stay_in_the_process_only_when_asked(enabled):
    out = subprocess.run([sys.executable, "-c", _MALLOC_PROBE, "on" if enabled else "off"], capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    held, after = (float(v) for v in out[-1].split())
    if enabled:
        assert out[0].startswith("freed memory kept for reuse")
        assert after > held - 20  # the 200 MB stay resident, ready for the next tensor
    else:
        assert out[0].startswith("glibc default")
        assert after < held - 150  # returned to the OS: the next large tensor faults fresh pages
