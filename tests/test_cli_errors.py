"""User errors through `chappie` as a user types it (a subprocess of .venv/bin/chappie):
one or two lines on stderr, no traceback, a non-zero exit within 3 s when no work has
started; `--debug` shows the traceback. Each test runs in its own data folder and
Prefect home, with no configured server (unless the test configures one)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPPIE = Path(sys.executable).with_name("chappie")  # .venv/bin/chappie
DEFAULT_CONFIG = REPO / "conf" / "default.yaml"
FAST_S = 3.0  # the bound for a user error before any work starts


def chappie(tmp_path: Path, *argv: str, **env: str) -> tuple[int, list[str], float]:
    """(exit status, stderr lines, seconds) of `chappie ARGV` run from the repository."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "CHAPPIE_"))
    }
    base.update(
        CHAPPIE_DATA_DIR=str(tmp_path / "data"),
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        **env,
    )
    t0 = time.monotonic()
    out = subprocess.run(
        [str(CHAPPIE), *argv], cwd=REPO, env=base, capture_output=True, text=True, timeout=120
    )
    return out.returncode, out.stderr.splitlines(), time.monotonic() - t0


def assert_user_error(result: tuple[int, list[str], float], status: int, *words: str) -> None:
    code, err, seconds = result
    assert code == status, err
    assert 1 <= len(err) <= 2, err
    assert "Traceback" not in "\n".join(err)
    for word in words:
        assert word in err[0], err
    assert seconds < FAST_S, f"{seconds:.1f} s"


@pytest.fixture()
def unknown_key(tmp_path: Path) -> Path:
    """The default config with a misspelt key in the ingest section."""
    text = DEFAULT_CONFIG.read_text().replace("  symbol: XBTUSD\n", "  symbl: XBTUSD\n", 1)
    assert "symbl" in text
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    return path


def test_nightly_with_a_missing_config_exits_2_in_one_line_before_prefect(
    tmp_path: Path,
) -> None:
    result = chappie(tmp_path, "nightly", "--config", str(tmp_path / "missing.yaml"))
    assert_user_error(result, 2, "config file not found", "missing.yaml")
    assert not (tmp_path / "data").exists()  # nothing started: no lock, no server, no folder


@pytest.mark.parametrize("command", ["nightly", "train"])
def test_unknown_config_key_names_the_key_and_the_file(
    tmp_path: Path, unknown_key: Path, command: str
) -> None:
    result = chappie(tmp_path, command, "--config", str(unknown_key))
    assert_user_error(result, 2, "unknown key 'ingest.symbl'", "typo.yaml")


def test_bad_yaml_through_train_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfeatures: [1\n  b: 2\n")
    result = chappie(tmp_path, "train", "--config", str(bad))
    assert_user_error(result, 2, "bad.yaml", "not valid YAML at line 3")


def test_rollback_with_nothing_to_roll_back_exits_2_at_once(tmp_path: Path) -> None:
    result = chappie(tmp_path, "rollback")
    assert_user_error(result, 2, "nothing to roll back")
    assert not (tmp_path / "data" / "mlflow.db").exists()  # a rollback creates no registry


def test_ingest_of_a_path_that_does_not_exist_is_one_line_not_a_quarantine(
    tmp_path: Path,
) -> None:
    result = chappie(tmp_path, "ingest", "tardis", str(tmp_path / "nope.csv.gz"))
    assert_user_error(result, 2, "no such file or folder", "nope.csv.gz")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(tmp_path: Path, unknown_key: Path, where: str) -> None:
    argv = ["train", "--config", str(unknown_key)]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    code, err, _ = chappie(tmp_path, *argv)
    assert code != 0
    assert "Traceback" in "\n".join(err)
    assert "ConfigError" in err[-1] and "ingest.symbl" in err[-1]


def test_unreachable_mlflow_server_is_one_line(tmp_path: Path) -> None:
    # a bound socket that does not listen: connections to it are refused (Linux)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        result = chappie(tmp_path, "rollback", MLFLOW_TRACKING_URI=url)
    assert_user_error(result, 1, "cannot reach the MLflow tracking server", url)
    assert "MLFLOW_TRACKING_URI" in result[1][0]


class _Refusing(BaseHTTPRequestHandler):
    requests = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        type(self).requests += 1
        self.send_error(403)

    do_HEAD = do_GET  # noqa: N815


@pytest.fixture()
def refusing_server() -> Iterator[str]:
    _Refusing.requests = 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_refused_download_fails_once_in_one_line(tmp_path: Path, refusing_server: str) -> None:
    argv = ["ingest", "bitmex-dump", "--url", refusing_server]
    result = chappie(tmp_path, *argv, "--start", "2019-01-01", "--end", "2019-01-02")
    assert_user_error(result, 1, "HTTP 403", "not retried")
    assert _Refusing.requests == 1


def test_download_file_does_not_retry_a_4xx_or_a_host_that_never_answered(
    tmp_path: Path, refusing_server: str
) -> None:
    from ingest.download import DownloadRefused, DownloadReport, download_file

    report = DownloadReport()
    with pytest.raises(DownloadRefused, match="HTTP 403"):
        download_file(f"{refusing_server}/trade/20190101.csv.gz", tmp_path / "a", report=report)
    assert report.attempts == 1 and _Refusing.requests == 1
    with socket.socket() as sock:  # bound, not listening: refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/trade/20190101.csv.gz"
        report = DownloadReport()
        with pytest.raises(DownloadRefused, match="cannot connect"):
            download_file(url, tmp_path / "b", report=report, sleep=lambda s: None)
    assert report.attempts == 1


def _bitmex_dump_day(folder: Path, minutes: int = 10) -> list[Path]:
    """A BitMEX public dump day (quote + trade, gzip CSV): top of the book only."""
    import gzip

    t0 = "2019-01-01D00:{m:02d}:{s:02d}.000000000"
    quotes, trades = [], []
    for i in range(minutes * 60):
        m, s = divmod(i, 60)
        bid = 3700.0 + 0.5 * ((i // 7) % 5)
        quotes.append(f"{t0.format(m=m, s=s)},XBTUSD,{100 + i},{bid},{bid + 0.5},{200 + i}")
        if i % 3 == 0:
            side = "Buy" if i % 2 else "Sell"
            price = bid + 0.5 if side == "Buy" else bid
            trades.append(f"{t0.format(m=m, s=s)},XBTUSD,{side},10,{price},PlusTick,t{i},1,0.1,10")
    qf, tf = folder / "quote" / "20190101.csv.gz", folder / "trade" / "20190101.csv.gz"
    for f, head, rows in (
        (qf, "timestamp,symbol,bidSize,bidPrice,askPrice,askSize", quotes),
        (
            tf,
            "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional",
            trades,
        ),
    ):
        f.parent.mkdir(parents=True)
        f.write_bytes(gzip.compress(("\n".join([head, *rows]) + "\n").encode()))
    return [qf, tf]


def test_features_on_a_top_of_book_source_are_refused_in_one_line(tmp_path: Path) -> None:
    """BitMEX's public dumps hold the touch only: FeatureSpec v1 reads 10 levels (#19)."""
    files = _bitmex_dump_day(tmp_path / "raw")
    code, err, _ = chappie(tmp_path, "ingest", "bitmex-dump", *map(str, files))
    assert code == 0, err
    tiny = REPO / "conf" / "tiny.yaml"
    code, err, _ = chappie(tmp_path, "features", "--config", str(tiny))
    assert code == 2, err
    lines = [line for line in err if line.strip()]
    assert len(lines) <= 2 and "Traceback" not in "\n".join(err), err
    assert "needs 10 book levels per side" in lines[0], err
    assert "imbalance_l10" in lines[0] and "bitmex-dump:quote" in lines[0], err
    assert "2019-01-01 holds 1" in lines[0], err


def test_features_before_any_ingest_is_one_line_before_prefect(tmp_path: Path) -> None:
    result = chappie(tmp_path, "features")
    assert_user_error(result, 2, "no events for XBTUSD", "chappie ingest")
    assert not any((tmp_path / "prefect").iterdir())  # no Prefect server started


def test_train_before_features_is_one_line_before_prefect(tmp_path: Path) -> None:
    result = chappie(tmp_path, "train")
    assert_user_error(result, 2, "no slices of this config's features", "chappie features")
    assert not any((tmp_path / "prefect").iterdir())  # no Prefect server started
