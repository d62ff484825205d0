"""The VisualDL board: the real server on real LogWriter logs, its HTTP API, pages, and a real browser."""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from visualdl import LogWriter

from paddle_cnn import board
from paddle_cnn.errors import UserError

from conftest import popen

CHROMIUM = "/usr/bin/chromium"
RUNS = ("runA", "runB")
SPLITS = ("train", "dev")
EPOCHS = 3
BOTH_TAGS = ["epoch/loss", "epoch/acc"]
TRAIN_TAGS = BOTH_TAGS + ["epoch/lr", "epoch/images_per_s", "step/loss"]
STEPS_PER_EPOCH = 5
# Requests to the local servers must never go through a proxy from the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _scalars(run_index: int, split: str) -> dict[str, list[tuple[int, float]]]:
    """Return the (step, value) points a finished run writes for each tag, distinct per run and split."""
    base = 2.0 + run_index + (0.25 if split == "dev" else 0.0)
    points = {
        "epoch/loss": [(e, base / e) for e in range(1, EPOCHS + 1)],
        "epoch/acc": [(e, 0.5 + 0.1 * e + 0.01 * run_index) for e in range(1, EPOCHS + 1)],
    }
    if split == "train":
        points["epoch/lr"] = [(e, 0.1 / (10 ** (e - 1))) for e in range(1, EPOCHS + 1)]
        points["epoch/images_per_s"] = [(e, 1000.0 + 10 * e + run_index) for e in range(1, EPOCHS + 1)]
        points["step/loss"] = [(s, base / (1 + s)) for s in range(EPOCHS * STEPS_PER_EPOCH)]
    return points


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Write two finished runs' logs with LogWriter under <tmp>/outputs; return (logdir, expected)."""
    logdir = tmp_path_factory.mktemp("board") / "outputs"
    expected = {}
    for i, run in enumerate(RUNS):
        for split in SPLITS:
            points = _scalars(i, split)
            with LogWriter(logdir=str(logdir / run / "vdl" / split)) as writer:
                for tag, series in points.items():
                    for step, value in series:
                        writer.add_scalar(tag=tag, value=value, step=step)
            expected[f"outputs/{run}/vdl/{split}"] = points
    return logdir, expected


@pytest.fixture(scope="module")
def server(logs):
    """Start the project's board on the logs on a free port; yield its origin URL."""
    proc, url = board.start_server(str(logs[0]), port=board.free_port())
    yield url
    board.stop_server(proc)


def _get_json(url: str):
    """GET a VisualDL API URL and return its 'data', failing on an API error status."""
    with DIRECT.open(url, timeout=30) as resp:
        body = json.loads(resp.read())
    assert body["status"] == 0, body
    return body["data"]


def _api(server: str, method: str, **params) -> object:
    """Call VisualDL's API method with query params and return its data."""
    query = "?" + urllib.parse.urlencode(params) if params else ""
    return _get_json(f"{server}{board.API_PREFIX}/{method}{query}")


def _page_status(url: str, language: str) -> tuple[int, str]:
    """GET a page with an Accept-Language header; return (HTTP status, Set-Cookie header)."""
    req = urllib.request.Request(url, headers={"Accept-Language": language})
    try:
        with DIRECT.open(req, timeout=30) as resp:
            return resp.status, resp.headers.get("Set-Cookie", "")
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Set-Cookie", "")


def test_server_serves_runs_tags_and_values(server, logs):
    """/api/runs, /api/scalar/tags and /api/scalar/list serve exactly what LogWriter wrote."""
    expected = logs[1]
    assert sorted(_api(server, "runs")) == sorted(expected)
    tags = _api(server, "scalar/tags")
    assert dict(zip(tags["runs"], map(sorted, tags["tags"]))) == {
        run: sorted(points) for run, points in expected.items()}
    for run, points in expected.items():
        for tag, series in points.items():
            served = _api(server, "scalar/list", run=run, tag=tag)  # rows: [wall ms, step, value]
            assert [row[1] for row in served] == [step for step, _ in series], (run, tag)
            # LogWriter stores float32.
            assert [row[2] for row in served] == pytest.approx([v for _, v in series], rel=1e-6)


def test_train_and_dev_of_a_run_are_two_runs_named_by_their_path(server, logs):
    """Each run directory shows as '<logdir>/<run>/vdl/train' and '.../dev', so they overlay per tag."""
    runs = _api(server, "runs")
    assert {r.rsplit("/vdl/", 1)[0] for r in runs} == {f"outputs/{r}" for r in RUNS}
    assert {r.rsplit("/", 1)[1] for r in runs} == set(SPLITS)


@pytest.fixture(scope="module")
def bare_visualdl(logs):
    """VisualDL started as `visualdl --logdir ...` would be, without this project's flags.

    Its proxy variables point at a sink, so any telemetry it sends is caught on loopback.
    Yields (origin URL, sink).
    """
    sink = SinkProxy()
    port = board.free_port()
    cmd = [sys.executable, "-m", "visualdl.server.app", "--logdir", "outputs",
           "--host", "127.0.0.1", "--port", str(port)]
    with pytest.MonkeyPatch.context() as mp:
        _route_proxies_to(mp, sink.url)
        proc = board._spawn(cmd, logs[0].parent)
    url = board.origin_url("127.0.0.1", port)
    try:
        board._wait_until_up(proc, url, board.STARTUP_TIMEOUT_S)
        yield url, sink
    finally:
        board.stop_server(proc)
        sink.close()


def test_scalar_page_answers_200_with_a_foreign_accept_language(server, bare_visualdl):
    """--language en avoids VisualDL's HTTP 500 for an Accept-Language that is neither en nor zh."""
    bare_status, _ = _page_status(bare_visualdl[0] + board.SCALAR_PAGE, "de-DE")
    assert bare_status == 500  # the bug the flag works around
    status, cookie = _page_status(server + board.SCALAR_PAGE, "de-DE")
    assert status == 200
    assert "vdl_lng=en" in cookie


class SinkProxy:
    """A loopback listener used as HTTP(S) proxy: records each connection's first bytes, answers nothing."""

    def __init__(self):
        self.requests: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The proxy URL for HTTP(S)_PROXY variables."""
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.requests.append(conn.recv(256))
                except OSError:
                    self.requests.append(b"")

    def wait_for_request(self, timeout: float) -> bool:
        """Wait up to timeout seconds for a first request; return whether one came."""
        deadline = time.monotonic() + timeout
        while not self.requests and time.monotonic() < deadline:
            time.sleep(0.1)
        return bool(self.requests)

    def close(self):
        """Stop listening."""
        self._stop.set()
        self._thread.join()
        self._sock.close()


def _route_proxies_to(mp: pytest.MonkeyPatch, proxy_url: str) -> None:
    """Send every non-loopback HTTP(S) request of child processes to proxy_url."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        mp.setenv(name, proxy_url)
        mp.setenv(name.lower(), proxy_url)
    mp.setenv("NO_PROXY", "127.0.0.1,localhost")
    mp.setenv("no_proxy", "127.0.0.1,localhost")


def test_telemetry_is_off(logs, bare_visualdl, server, monkeypatch):
    """The board sends nothing out and serves no analytics id, where bare VisualDL phones home."""
    bare_sink = bare_visualdl[1]
    assert bare_sink.wait_for_request(15), "bare VisualDL sent no telemetry: the probe cannot see it"
    assert b"paddlepaddle.org.cn" in bare_sink.requests[0]

    sink = SinkProxy()
    try:
        _route_proxies_to(monkeypatch, sink.url)
        proc, _ = board.start_server(str(logs[0]), port=board.free_port())
        # Bare VisualDL's request starts before it serves; allow the same moment and more.
        sink.wait_for_request(2)
        board.stop_server(proc)
    finally:
        sink.close()
    assert sink.requests == []

    # The page would load Baidu analytics with this id; the board's must be empty.
    with DIRECT.open(server + board.PUBLIC_PATH + "/__snowpack__/env.local.js", timeout=30) as resp:
        env_js = resp.read().decode()
    assert 'SNOWPACK_PUBLIC_TELEMETRY_ID=""' in env_js


def test_missing_or_empty_logdir_is_a_user_error(tmp_path):
    """A logdir that does not exist, or holds no VisualDL log, says to train a run first."""
    for logdir in (tmp_path / "nothing", tmp_path):
        with pytest.raises(UserError, match="no VisualDL logs under .*train a run first"):
            board.start_server(str(logdir), port=board.free_port())


def test_port_in_use_and_bad_options_are_user_errors(logs):
    """A busy port, an unsupported language or a non-numeric port fail before VisualDL starts."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        with pytest.raises(UserError, match="used by another program.*--port auto"):
            board.start_server(str(logs[0]), port=busy.getsockname()[1])
    with pytest.raises(UserError, match="language 'de'.*en, zh"):
        board.start_server(str(logs[0]), port=board.free_port(), language="de")
    with pytest.raises(UserError, match="port 'x' is not valid"):
        board.parse_port("x")
    with pytest.raises(UserError, match="port '70000' is not valid"):
        board.parse_port("70000")
    assert board.parse_port("8041") == 8041
    auto = board.parse_port("auto")
    with socket.create_server(("127.0.0.1", auto)):  # really free
        pass


def test_server_that_dies_raises_with_its_output(logs, monkeypatch):
    """If the server process exits before serving, the UserError carries its exit code and output."""
    fake = [sys.executable, "-c", "import sys; print('VisualDL boom: bad record', file=sys.stderr); sys.exit(3)"]
    monkeypatch.setattr(board, "server_command", lambda *args: fake)
    with pytest.raises(UserError, match=r"(?s)exited with code 3.*VisualDL boom: bad record"):
        board.start_server(str(logs[0]), port=board.free_port())


def test_run_board_serves_until_ctrl_c_then_stops_the_server(logs):
    """`paddle-cnn board` prints the URL, serves it, and on Ctrl-C stops VisualDL and exits 0."""
    code = ("import sys; from paddle_cnn.board import run_board; "
            f"sys.exit(run_board({str(logs[0])!r}, port='auto'))")
    # Its own session, so that SIGINT can go to the whole group, as Ctrl-C in a terminal does.
    proc = popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line).group(0)
        assert url.endswith(board.SCALAR_PAGE)
        assert _page_status(url, "en")[0] == 200
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0
        assert "VisualDL stopped." in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(urllib.error.URLError):  # the server went down with it
        DIRECT.open(url, timeout=5)


def test_user_modules_beside_the_logdir_are_not_imported(logs, tmp_path):
    """The server runs in the logdir's parent; a user's flask.py there must not replace Flask.

    (Port 0: any free port.)
    """
    shutil.copytree(logs[0], tmp_path / "outputs")
    (tmp_path / "flask.py").write_text('raise SystemExit("user flask.py was imported")\n')
    proc, url = board.start_server(str(tmp_path / "outputs"), port=0)
    try:
        assert sorted(_api(url, "runs")) == sorted(logs[1])
        assert not url.endswith(":0")  # port 0 became the real port it serves on
    finally:
        board.stop_server(proc)


def _png_size(path) -> tuple[int, int]:
    """Return (width, height) of a PNG file, checking its signature."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason=f"{CHROMIUM} missing: run scripts/install_browser.sh (Debian chromium)")
def test_scalar_page_renders_runs_and_charts_in_headless_chromium(server, tmp_path):
    """Headless Chromium renders the scalar page: every run listed, both tag groups, one chart per tag."""
    shot = tmp_path / "visualdl_scalar.png"
    sink = SinkProxy()  # anything the page loads from outside lands here, not on the network
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           f"--proxy-server={sink.url}", "--window-size=1400,1000",
           "--virtual-time-budget=15000", f"--screenshot={shot}", "--dump-dom",
           server + board.SCALAR_PAGE]
    try:
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        print(f"\nscreenshot: {shot} (chromium took {time.monotonic() - started:.1f} s)")
    finally:
        sink.close()
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    for run in RUNS:
        for split in SPLITS:
            assert f"outputs/{run}/vdl/{split}" in dom  # the run selector
    # Tag groups with their tag counts; the tag names themselves are drawn on the charts' canvases.
    groups = dict(re.findall(r'<h3>([^<]+)</h3><span class="total">(\d+)</span>', dom))
    assert groups == {"epoch": "4", "step": "1"}
    # The 'epoch' group opens by default: one rendered chart per tag.
    assert dom.count('<div class="echarts"') == 4
    assert _png_size(shot) == (1400, 1000)
    assert not [r for r in sink.requests if b"baidu" in r or b"paddlepaddle" in r]


def _descendants(pid: int) -> list[int]:
    """Every live process below pid, from /proc (children, grandchildren, ...)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found += children
        frontier += children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_board_stopped_by_a_signal_leaves_no_child_running(logs, signum):
    """Sent to the board process alone (as `timeout`, `docker stop` or a process manager does)."""
    code = ("import sys; from paddle_cnn.board import run_board; "
            f"sys.exit(run_board({str(logs[0])!r}, port='auto'))")
    proc = popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        url = re.search(r"http://\S+", proc.stdout.readline()).group(0)
        children = _descendants(proc.pid)
        assert children, "the VisualDL server should be a child of the board"
        proc.send_signal(signum)
        assert proc.wait(30) == 0
        assert "VisualDL stopped." in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "a child of the board survived it"
    with pytest.raises(urllib.error.URLError):  # and nothing holds the port
        DIRECT.open(url, timeout=5)
