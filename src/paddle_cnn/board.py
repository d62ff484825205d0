"""Serve training logs in VisualDL's own web UI: start the real server, wait for it, stop it.

VisualDL 2.5.3 has two traps that this module steps around:

* Pages answer HTTP 500 when the browser's Accept-Language is neither English nor Chinese
  (it sets its language cookie to None), so the server always gets ``--language``.
* Telemetry is on by default: the server POSTs its version to paddlepaddle.org.cn
  (``visualdl.utils.update_util.PbUpdater``, which may even overwrite a proto file with what
  it gets back) and the page loads Baidu analytics (hm.baidu.com) with a fixed site id. The
  only switch for both is the CLI flag ``--disable-telemetry``; there is no environment
  variable. The server always gets that flag.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from paddle_cnn.errors import UserError
from paddle_cnn.signals import EXIT_INTERRUPTED, raising_on

VISUALDL_LANGUAGES = ("en", "zh")
PUBLIC_PATH = "/app"
SCALAR_PAGE = PUBLIC_PATH + "/scalar"
API_PREFIX = PUBLIC_PATH + "/api"
ALIVE_PATH = "/alive"  # VisualDL's own liveness route; answers 204
STARTUP_TIMEOUT_S = 60.0
_LOG_TAIL_CHARS = 2000

# The readiness probe must reach the local server directly, never through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a TCP port that is free right now on host.

    Args:
        host: the address the server will bind.

    Returns:
        A port number (another process may still take it before the server binds it).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def parse_port(value: int | str, host: str = "127.0.0.1") -> int:
    """Turn the CLI's port (a number, 0 or 'auto') into a concrete port number.

    Args:
        value: a port number, or 0 / 'auto' for any free port.
        host: the address the server will bind (for picking a free port).

    Returns:
        A port in 1..65535.
    """
    if str(value).strip().lower() in ("0", "auto"):
        return free_port(host)
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise UserError(f"board port {value!r} is not valid: give a number from 1 to 65535, "
                        "or 0 / 'auto' to pick a free port.")
    return port


def _find_logs(logdir: str | Path) -> Path:
    """Return logdir as an absolute path, or raise UserError if it holds no VisualDL log file."""
    root = Path(logdir).expanduser().resolve()
    # VisualDL's reader takes any file whose name contains 'vdlrecords' as a log.
    if root.is_dir() and next(root.rglob("*vdlrecords*"), None) is not None:
        return root
    raise UserError(f"no VisualDL logs under {logdir}; train a run first, or pass the directory "
                    "that holds your run directories (each with vdl/train and vdl/dev), e.g. outputs/.")


def _check_port_free(host: str, port: int) -> None:
    """Raise UserError if host:port cannot be bound, before VisualDL hangs on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option as Werkzeug, so a port left in TIME_WAIT is not reported as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot serve VisualDL on {host}:{port}: {exc.strerror}. The port is "
                            "probably used by another program (maybe another board); pass another "
                            "--port, or --port auto to pick a free one.") from exc


def server_command(logdir_name: str, host: str, port: int, language: str) -> list[str]:
    """Build the command line that runs VisualDL's own server with this project's fixed options.

    Args:
        logdir_name: the log directory as VisualDL should see it (run names are paths below it).
        host: address to bind.
        port: port to bind.
        language: UI language, one of VISUALDL_LANGUAGES.

    Returns:
        The argv list for subprocess.
    """
    # visualdl has no __main__; its console script calls visualdl.server.app:main, as this does.
    # -I (isolated): the server runs in the user's directory, and a plain -m would put that on
    # sys.path, so a user's grp.py or flask.py there would be imported instead of the real module.
    return [sys.executable, "-I", "-m", "visualdl.server.app", "--logdir", logdir_name,
            "--host", host, "--port", str(port), "--language", language,
            "--public-path", PUBLIC_PATH, "--disable-telemetry"]


def origin_url(host: str, port: int) -> str:
    """Return the http://host:port origin, with brackets for an IPv6 host.

    Args:
        host: address the server binds.
        port: its port.

    Returns:
        The origin URL without a trailing slash.
    """
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def log_tail(proc: subprocess.Popen) -> str:
    """Return the last lines the server printed (stdout and stderr together).

    Args:
        proc: a process returned by start_server.

    Returns:
        Up to the last 2000 characters of its output.
    """
    log = proc.board_log  # set by start_server
    log.seek(max(0, os.fstat(log.fileno()).st_size - 4 * _LOG_TAIL_CHARS))
    return log.read().decode("utf-8", "replace")[-_LOG_TAIL_CHARS:].strip()


def start_server(logdir: str, host: str = "127.0.0.1", port: int = 8040, language: str = "en",
                 timeout: float = STARTUP_TIMEOUT_S) -> tuple[subprocess.Popen, str]:
    """Start VisualDL's server on logdir as a subprocess and wait until it answers HTTP.

    Args:
        logdir: directory holding run directories (or one run directory) with VisualDL logs.
        host: address to bind; the loopback default keeps the board off the network.
        port: port to bind; 0 picks a free one (parse_port also takes 'auto').
        language: UI language, one of VISUALDL_LANGUAGES.
        timeout: seconds to wait for the first HTTP answer.

    Returns:
        The server process (its output is readable with log_tail) and its origin URL.
    """
    if language not in VISUALDL_LANGUAGES:
        raise UserError(f"board language {language!r} is not supported by VisualDL: use one of "
                        f"{', '.join(VISUALDL_LANGUAGES)}.")
    root = _find_logs(logdir)
    port = port or free_port(host)  # VisualDL would bind 0 to a port we could not know
    _check_port_free(host, port)
    # Run from the parent so VisualDL names runs '<logdir>/<run>/vdl/train', as `visualdl --logdir` would.
    cwd, name = (root.parent, root.name) if root.name else (root, ".")
    proc = _spawn(server_command(name, host, port, language), cwd)
    url = origin_url(host, port)
    try:
        _wait_until_up(proc, url, timeout)
    except BaseException:
        stop_server(proc)
        raise
    return proc, url


def _die_with_parent() -> None:
    """In the server child (Linux): get SIGTERM when the board process dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(cmd: list[str], cwd: Path) -> subprocess.Popen:
    """Start cmd with its output in an unlinked temporary file, readable as proc.board_log."""
    fd, path = tempfile.mkstemp(prefix="paddle-cnn-visualdl-", suffix=".log")
    # A separate read handle has its own offset, so reading never moves where the server writes;
    # unlinking now leaves nothing to clean up whatever happens later.
    reader = open(path, "rb")
    os.unlink(path)
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=fd,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    except BaseException:
        reader.close()
        raise
    finally:
        os.close(fd)
    proc.board_log = reader
    return proc


def _wait_until_up(proc: subprocess.Popen, url: str, timeout: float) -> None:
    """Poll the server's liveness route until it answers, it dies, or timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"VisualDL exited with code {proc.returncode} before serving. "
                            f"Its output ends with:\n{log_tail(proc)}")
        # Werkzeug reports a lost bind race but VisualDL's non-daemon thread keeps the process alive.
        if "Address already in use" in log_tail(proc):
            raise UserError(f"cannot serve VisualDL at {url}: the port was taken meanwhile; pass "
                            "another --port, or --port auto.")
        try:
            with _DIRECT.open(url + ALIVE_PATH, timeout=2) as resp:
                if resp.status == 204:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise UserError(f"VisualDL did not answer at {url} within {timeout:.0f} s. "
                    f"Its output ends with:\n{log_tail(proc)}")


def stop_server(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Stop the server (SIGTERM, then SIGKILL after timeout) and close its log.

    Args:
        proc: a process returned by start_server.
        timeout: seconds to wait after SIGTERM.

    Returns:
        The process's exit code.
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):  # a second Ctrl-C/SIGTERM: no more waiting
            proc.kill()
            proc.wait()
    proc.board_log.close()
    return proc.returncode


def run_board(logdir: str = "outputs", host: str = "127.0.0.1", port: int | str = 8040,
              language: str = "en") -> int:
    """Serve logdir with VisualDL until Ctrl-C (the `paddle-cnn board` command).

    Args:
        logdir: directory holding run directories with VisualDL logs.
        host: address to bind (127.0.0.1 keeps it private; 0.0.0.0 exposes it to the network).
        port: port number, or 0 / 'auto' for a free one.
        language: UI language, one of VISUALDL_LANGUAGES.

    Returns:
        0 after Ctrl-C, SIGTERM or SIGHUP, 130 for one of those during start-up, 1 if the server
        stopped by itself.
    """
    # SIGTERM (timeout, docker stop, a process manager) and SIGHUP (a closed terminal) stop the
    # server like Ctrl-C does, instead of ending this process and leaving the server on the port.
    with raising_on((signal.SIGTERM, signal.SIGHUP), KeyboardInterrupt):
        return _serve(logdir, host, port, language)


def _serve(logdir: str, host: str, port: int | str, language: str) -> int:
    """run_board with the signals set up."""
    try:
        proc, url = start_server(logdir, host, parse_port(port, host), language)
    except KeyboardInterrupt:  # start_server has already stopped the server
        return EXIT_INTERRUPTED
    try:
        print(f"VisualDL serving {logdir} at {url}{SCALAR_PAGE}  (Ctrl-C to stop)", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"note: bound to {host}, so other machines on the network can open the board",
                  file=sys.stderr, flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    # Ctrl-C in a terminal reaches the server too, and it may die of it before we see the interrupt.
    if proc.poll() is None or proc.returncode == -signal.SIGINT:
        stop_server(proc)
        print("VisualDL stopped.", flush=True)
        return 0
    tail = log_tail(proc)
    stop_server(proc)
    print(f"VisualDL stopped by itself (exit code {proc.returncode}). Its output ends with:\n{tail}",
          file=sys.stderr)
    return 1
