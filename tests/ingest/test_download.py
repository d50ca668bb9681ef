"""Dump download against a real local HTTP server on 127.0.0.1: retries, resume, 404."""

from __future__ import annotations

import gzip
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ingest.download import DownloadError, download_file, download_range, dump_days

PAYLOAD = gzip.compress(random.Random(0).randbytes(400_000))


class _State:
    fail_next = 0  # answer 503 this many times
    cut_next = 0  # send half the body then drop the connection this many times
    ranges: list[str | None] = []


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if not self.path.startswith("/trade/") and not self.path.startswith("/quote/"):
            self.send_error(404)
            return
        if "20190103" in self.path:
            self.send_error(404)
            return
        _State.ranges.append(self.headers.get("Range"))
        if _State.fail_next:
            _State.fail_next -= 1
            self.send_error(503)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if _State.cut_next:
            _State.cut_next -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)


@pytest.fixture()
def server() -> Iterator[str]:
    _State.fail_next = 0
    _State.cut_next = 0
    _State.ranges = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_download_retries_server_errors_then_succeeds(server: str, tmp_path: Path) -> None:
    _State.fail_next = 2
    target = tmp_path / "trade" / "20190101.csv.gz"
    assert download_file(f"{server}/trade/20190101.csv.gz", target, retries=3, backoff_s=0.0)
    assert target.read_bytes() == PAYLOAD and not target.with_name(target.name + ".part").exists()


def test_download_resumes_a_cut_transfer_with_range(server: str, tmp_path: Path) -> None:
    _State.cut_next = 1
    target = tmp_path / "20190101.csv.gz"
    assert download_file(f"{server}/trade/20190101.csv.gz", target, retries=2, backoff_s=0.0)
    assert target.read_bytes() == PAYLOAD
    assert (
        _State.ranges[0] is None
        and _State.ranges[1] is not None
        and _State.ranges[1].startswith("bytes=")
    )


def test_download_gives_up_after_retries_and_keeps_no_final_file(
    server: str, tmp_path: Path
) -> None:
    _State.fail_next = 10
    target = tmp_path / "x.csv.gz"
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download_file(f"{server}/trade/20190101.csv.gz", target, retries=1, backoff_s=0.0)
    assert not target.exists()


def test_download_range_reports_missing_days_and_skips_complete_files(
    server: str, tmp_path: Path
) -> None:
    rep = download_range(
        server, "2019-01-01", "2019-01-03", str(tmp_path), kinds=("trade",), backoff_s=0.0
    )
    assert len(rep["downloaded"]) == 2 and len(rep["missing"]) == 1  # type: ignore[arg-type]
    again = download_range(
        server, "2019-01-01", "2019-01-02", str(tmp_path), kinds=("trade",), backoff_s=0.0
    )
    assert again["downloaded"] == [] and len(again["skipped"]) == 2  # type: ignore[arg-type]


def test_dump_days_inclusive_and_rejects_reversed_range() -> None:
    assert dump_days("2019-01-30", "2019-02-01") == ["20190130", "20190131", "20190201"]
    with pytest.raises(ValueError):
        dump_days("2019-01-02", "2019-01-01")
