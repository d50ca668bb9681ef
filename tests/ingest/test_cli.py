"""`chappie ingest`: argument handling (plain) and one in-process run under the harness."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from flows.cli import build_parser
from flows.cli_ingest import build_config


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["ingest", *argv])


def test_cli_ingest_builds_config_with_instrument_file(
    instruments_json: Path, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b"
    a.write_text("")
    b.mkdir()
    cfg, download = build_config(
        _args("tardis", str(a), str(b), "--symbol", "XBTUSD", "--instrument", str(instruments_json))
    )
    assert cfg.source == "tardis" and cfg.paths == (str(a), str(b)) and download is None  # type: ignore[attr-defined]
    assert cfg.instrument.lot_size == 100  # type: ignore[attr-defined]


def test_cli_ingest_download_mode_and_argument_errors() -> None:
    _, download = build_config(
        _args(
            "bitmex-dump",
            "--url",
            "http://127.0.0.1:1/data",
            "--start",
            "2019-01-01",
            "--end",
            "2019-01-02",
        )
    )
    assert download == {
        "url": "http://127.0.0.1:1/data",
        "start": "2019-01-01",
        "end": "2019-01-02",
        "kinds": ["trade", "quote"],
    }
    for bad in (
        ("tardis",),
        ("tardis", "x", "--url", "u"),
        ("bitmex-dump", "--url", "u"),
        ("tardis", "x", "--symbol", "ETHUSD"),
    ):
        with pytest.raises(ValueError):
            build_config(_args(*bad))
