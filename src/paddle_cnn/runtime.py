"""Process set-up that must happen before paddle is imported, and the run's environment record.

Paddle reads OMP_NUM_THREADS when its libraries load (and sets it to 1 if unset, idling every
other core), and the MKL it bundles picks its code path from MKL_DEBUG_CPU_TYPE at load time
(a slow generic path on AMD CPUs unless it is 5). So both are decided here, from the machine,
before the first `import paddle`; whatever the user set explicitly wins.

One more process-wide setting: glibc's malloc hands large blocks back to the OS when they are freed,
so every large tensor of the next step page-faults fresh, zeroed memory (9.4 MB weight gradients,
33 MB CIFAR-stem activations); keep_freed_memory makes it keep them for reuse instead.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from pathlib import Path

# Filled by setup(); written into every run directory's env.json.
DECISIONS: dict[str, object] = {}
# The command that started the run; the CLI sets it (sys.argv is the test runner's under pytest).
COMMAND: list[str] = list(sys.argv)


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity).

    Returns:
        Number of usable cores, at least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_vendor() -> str:
    """CPU vendor string as the kernel reports it (e.g. GenuineIntel, AuthenticAMD).

    Returns:
        The vendor id, or "unknown" where /proc/cpuinfo is not readable.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def rank(environ: dict | None = None) -> int:
    """This process's rank in a paddle.distributed.launch job (0 when not launched by it).

    Read from the launcher's environment, so it works before paddle is imported.

    Args:
        environ: environment to read (default os.environ).
    Returns:
        The global rank.
    """
    return int((os.environ if environ is None else environ).get("PADDLE_TRAINER_ID") or 0)


def world_size(environ: dict | None = None) -> int:
    """Number of processes in the data-parallel job (1 when not launched by paddle.distributed.launch).

    Args:
        environ: environment to read (default os.environ).
    Returns:
        The world size.
    """
    return int((os.environ if environ is None else environ).get("PADDLE_TRAINERS_NUM") or 1)


def local_world_size(environ: dict | None = None) -> int:
    """Processes of the job on this machine (the launcher's --nproc_per_node).

    Args:
        environ: environment to read (default os.environ).
    Returns:
        The local process count, 1 outside the launcher.
    """
    env = os.environ if environ is None else environ
    return int(env.get("PADDLE_LOCAL_SIZE") or world_size(env))


def setup(threads: int | None = None, environ: dict | None = None, keep_freed_memory: bool = True) -> dict:
    """Choose thread count, MKL code path and malloc policy; must run before paddle is imported.

    Args:
        threads: threads asked for by the config (None: the environment, else all cores).
        environ: environment to modify (default os.environ; tests pass a dict and the process is left alone).
        keep_freed_memory: the config's runtime.keep_freed_memory (see keep_freed_memory_policy()).
    Returns:
        The decisions made, also kept in DECISIONS for env.json.
    """
    env = os.environ if environ is None else environ
    decisions: dict[str, object] = {"paddle_already_imported": "paddle" in sys.modules}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        decisions["threads_source"] = "config runtime.threads"
    elif env.get("OMP_NUM_THREADS"):
        decisions["threads_source"] = "environment OMP_NUM_THREADS"
    elif local_world_size(env) > 1:
        # paddle.distributed.launch starts one process per slot on this machine: share the cores.
        env["OMP_NUM_THREADS"] = str(max(1, available_cores() // local_world_size(env)))
        decisions["threads_source"] = f"available cores / {local_world_size(env)} local processes"
    else:
        env["OMP_NUM_THREADS"] = str(available_cores())
        decisions["threads_source"] = "all available cores"
    decisions["threads"] = int(env["OMP_NUM_THREADS"])

    vendor = cpu_vendor()
    if env.get("MKL_DEBUG_CPU_TYPE"):
        decisions["mkl_debug_cpu_type_source"] = "environment"
    elif vendor == "AuthenticAMD":
        # Only AMD needs it; on Intel it is a no-op (measured: same images/s), so leave it unset.
        env["MKL_DEBUG_CPU_TYPE"] = "5"
        decisions["mkl_debug_cpu_type_source"] = "set for AMD CPU"
    else:
        decisions["mkl_debug_cpu_type_source"] = "not needed on this CPU"
    decisions["mkl_debug_cpu_type"] = env.get("MKL_DEBUG_CPU_TYPE")
    decisions["cpu_vendor"] = vendor
    decisions["cores"] = available_cores()
    if environ is None:
        decisions["malloc"] = keep_freed_memory_policy(keep_freed_memory)
        DECISIONS.clear()
        DECISIONS.update(decisions)
        _import_paddle_quietly()
    return decisions


# mallopt parameters (glibc malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory_policy(enabled: bool) -> str:
    """Make glibc malloc keep freed memory for reuse: no mmap per large block, no trimming below 1 GiB.

    Measured on an AMD EPYC (Zen 4, 2 cores): CIFAR-stem ResNet18 training step 2.77 -> 2.24 s,
    peak RSS 1.29 -> 1.62 GB; ResNet18 at 32x32 unchanged in memory (docs/speed.md).

    Args:
        enabled: runtime.keep_freed_memory.
    Returns:
        What was done, for env.json.
    """
    if not enabled:
        return "glibc default (runtime.keep_freed_memory false)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return f"left alone (not glibc: {platform.system()} {platform.libc_ver()[0] or 'unknown libc'})"
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        return "glibc default (mallopt refused)"
    return "freed memory kept for reuse (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 GiB)"


def _import_paddle_quietly() -> None:
    """Import paddle now, dropping its import-time warning that OMP_NUM_THREADS is above 1.

    That warning is about data-parallel runs and OpenBLAS builds; here the thread count is a
    measured choice (recorded in env.json). Anything else paddle prints still gets through.
    """
    import contextlib
    import io

    if "paddle" in sys.modules:
        return
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        import paddle  # noqa: F401
    kept = [line for line in buf.getvalue().splitlines()
            if "OMP_NUM_THREADS set to" not in line and "USE OMP_NUM_THREADS WISELY" not in line]
    if kept:
        print("\n".join(kept), file=sys.stderr)


def select_device(device: str) -> str:
    """Pick and activate the paddle device for `runtime.device` (imports paddle).

    Args:
        device: "auto", "cpu" or "gpu".
    Returns:
        The device string paddle now uses.
    """
    import paddle

    from .errors import ConfigError

    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        raise ConfigError("runtime.device is 'gpu' but paddle sees no GPU; use 'auto' or 'cpu'.")
    chosen = "gpu" if device in ("gpu", "auto") and has_gpu else "cpu"
    paddle.set_device(chosen)
    return paddle.get_device()


def git_commit() -> str | None:
    """The project's git commit, when the package runs from a checkout.

    Returns:
        The commit hash (with "-dirty" when there are uncommitted changes), or None.
    """
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def versions() -> dict:
    """Versions of Python, Paddle and numpy in this process.

    Returns:
        {"python", "paddle", "numpy"}.
    """
    import numpy
    import paddle

    return {"python": platform.python_version(), "paddle": paddle.__version__, "numpy": numpy.__version__}


def cpu_record() -> dict:
    """The CPU this runs on, so every recorded figure can name it.

    Returns:
        {"vendor", "model", "cores"}; the model name from /proc/cpuinfo where there is one.
    """
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor())
    return {"vendor": cpu_vendor(), "model": model, "cores": available_cores()}


def environment_record(device: str) -> dict:
    """Everything needed to know how a run was executed (for env.json).

    Args:
        device: the device string in use.
    Returns:
        A JSON-serialisable dict.
    """
    return {
        **versions(),
        "platform": platform.platform(),
        "cpu": cpu_record(),
        "device": device,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "mkl_debug_cpu_type": os.environ.get("MKL_DEBUG_CPU_TYPE"),
        "runtime_decisions": dict(DECISIONS),
        "command": COMMAND,
        "world_size": world_size(),  # processes of a paddle.distributed.launch job (1: not data-parallel)
        "git_commit": git_commit(),
    }
