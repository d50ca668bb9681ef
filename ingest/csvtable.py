"""Fast, loss-accounting CSV parsing into string columns (adapter helpers, polars).

A file is read as lines, the header checked, every line's field count checked (a
ragged line is a malformed row, never silently truncated), then split into string
columns. Casting to numbers happens in the vendor readers with ``strict=False`` so a
bad value becomes a counted, reasoned rejection instead of an exception.

Every line after the header is one row of ``rows_in``, counted from the bytes
(`count_lines`) before any parsing or symbol filter: a blank line is filtered, a line
with the wrong number of fields (a comma-less one included) is rejected whatever symbol
it names, and only well-formed rows of other symbols are filtered as such.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import polars as pl

from ingest.rawfile import RawFileError, line_shapes
from ingest.report import FileRead

LINE = "_line"
REASON = "_reason"
ROWNO = "_row"
BLANK = "blank line"
OTHER_SYMBOL = "row of another symbol"
_BLANK_LINE = re.compile(rb"(?:^|\n)[ \t\r]*(?:\n|$)")


def body_of(data: bytes) -> bytes:
    """The bytes after the header line."""
    nl = data.find(b"\n")
    return b"" if nl < 0 else data[nl + 1 :]


def count_lines(body: bytes) -> int:
    """Lines in `body` (the file after its header): one per newline, plus an
    unterminated last line."""
    if not body:
        return 0
    return body.count(b"\n") + (0 if body.endswith(b"\n") else 1)


def has_blank_line(body: bytes) -> bool:
    """True when some line of `body` is empty or white space only."""
    if not body:
        return False
    s = body[:-1] if body.endswith(b"\n") else body  # the last newline ends a line
    return not s or _BLANK_LINE.search(s) is not None


def count_input(fr: FileRead, data: bytes) -> int:
    """Set ``fr.rows_in`` to the data lines of `data` (header excluded); return it."""
    fr.rows_in = count_lines(body_of(data))
    return fr.rows_in


def read_header(data: bytes) -> list[str]:
    """Fields of the first line. Raises RawFileError when there is no header line."""
    nl = data.find(b"\n")
    head = (data if nl < 0 else data[:nl]).decode("utf-8", errors="replace").strip("\r\n\ufeff ")
    if not head:
        raise RawFileError("missing header line")
    return head.split(",")


def read_lines(data: bytes, first_row: int = 2) -> tuple[list[str], pl.DataFrame]:
    """(header fields, frame of data lines with their 1-based line number; the first
    data line is `first_row`: 2 in a whole file, later for a block of a streamed one).

    Raises RawFileError when there is no header line.
    """
    header = read_header(data)
    body = body_of(data)
    n = count_lines(body)
    lines = None
    if n:
        try:
            lines = pl.read_csv(
                io.BytesIO(body),
                has_header=False,
                separator="\x1f",
                quote_char=None,
                new_columns=[LINE],
                infer_schema=False,
                encoding="utf8-lossy",
            )
        except (pl.exceptions.PolarsError, ValueError):
            lines = None  # a separator byte inside a line: split in Python below
        if lines is not None and lines.height != n:
            lines = None
        if lines is None:
            text = body.decode("utf-8", errors="replace").split("\n")
            lines = pl.DataFrame({LINE: text[:n]}, schema={LINE: pl.String})
    else:
        lines = pl.DataFrame({LINE: []}, schema={LINE: pl.String})
    lines = lines.with_columns(pl.col(LINE).str.strip_chars_end("\r")).with_row_index(
        ROWNO, offset=first_row
    )
    return header, lines


def drop_blank(fr: FileRead, lines: pl.DataFrame) -> pl.DataFrame:
    """Count blank lines as filtered and drop them."""
    blank = pl.col(LINE).is_null() | (pl.col(LINE).str.strip_chars() == "")
    n = int(lines.select(blank.sum()).item())
    fr.filter(BLANK, n)
    return lines.filter(~blank) if n else lines


def filter_symbol(fr: FileRead, df: pl.DataFrame, symbol: str) -> pl.DataFrame:
    """Keep the rows of `symbol` and the malformed rows (a REASON already: rejected
    whatever symbol they name); count well-formed rows of other symbols as filtered."""
    keep = (pl.col("symbol") == symbol).fill_null(False) | pl.col(REASON).is_not_null()
    out = df.filter(keep)
    fr.filter(OTHER_SYMBOL, df.height - out.height)
    return out


def read_typed(
    data: bytes, header: Sequence[str], dtypes: dict[str, pl.DataType], first_row: int = 2
) -> pl.DataFrame | None:
    """Fast path for a clean file: one typed polars parse (header already checked).

    Returns None when any line does not parse (a ragged line, a value of the wrong
    type): the caller then takes the line-by-line path that gives each bad row its
    reason. Missing trailing fields parse as nulls, which the readers reject. Also None
    when the body has a blank line or the parse does not give one row per line.
    """
    return read_typed_body(body_of(data), header, dtypes, first_row)


def read_typed_body(
    body: bytes, header: Sequence[str], dtypes: dict[str, pl.DataType], first_row: int = 2
) -> pl.DataFrame | None:
    """`read_typed` of the lines after the header line (a block of a streamed file is
    parsed as it is, not copied behind its header).

    A blank or short line parses with a null last field (every header here has more
    than one field), so the lines are only looked at when the last column has a null:
    a clean file is parsed once and never scanned line by line.
    """
    try:
        df = pl.read_csv(
            io.BytesIO(body),
            has_header=False,
            schema=pl.Schema({h: dtypes.get(h, pl.String()) for h in header}),
            truncate_ragged_lines=False,
            quote_char=None,
        )
    except (pl.exceptions.PolarsError, ValueError):
        return None
    if df.height != count_lines(body):
        return None
    # a blank line parses as a row of nulls, a short one with null trailing fields: the
    # line path counts or rejects them (a null value in a whole line stays here)
    if (
        df.height
        and df[header[-1]].null_count()
        and (has_blank_line(body) or _has_ragged_line(body, len(header)))
    ):
        return None
    return df.with_row_index(ROWNO, offset=first_row).with_columns(
        pl.lit(None, dtype=pl.String).alias(LINE), pl.lit(None, dtype=pl.String).alias(REASON)
    )


def _has_ragged_line(body: bytes, n_fields: int) -> bool:
    """True when a line of `body` has a field count other than `n_fields` (checked
    only when the typed parse left a trailing field empty: a short line parses as
    nulls, and must be rejected as malformed before any symbol filter sees it)."""
    block = body if body.endswith(b"\n") else body + b"\n"
    return bool(line_shapes(block, n_fields)[1])


def int_col(df: pl.DataFrame, col: str) -> pl.Expr:
    """Int64 of an integer column, or of integral numeric text (null otherwise)."""
    if df.schema[col].is_integer():
        return pl.col(col).cast(pl.Int64)
    return int_expr(pl.col(col))


def check_header(
    header: Sequence[str], required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    """Raises RawFileError unless `header` is `required` (+ a prefix of `optional`)."""
    allowed = [list(required) + list(optional[:i]) for i in range(len(optional) + 1)]
    if list(header) not in allowed:
        raise RawFileError(
            f"wrong header: {','.join(header)[:200]!r}, expected {','.join(required)!r}"
        )


def split_fields(lines: pl.DataFrame, header: Sequence[str]) -> pl.DataFrame:
    """String columns named by `header`, plus REASON ("malformed row: ..." for a line
    with the wrong number of fields) and ROWNO/LINE."""
    n = len(header)
    counted = lines.with_columns(
        (pl.col(LINE).str.count_matches(",", literal=True) + 1).alias("_nf")
    )
    fields = pl.col(LINE).str.split_exact(",", n - 1).struct.rename_fields(list(header))
    return (
        counted.with_columns(fields.alias("_f"))
        .unnest("_f")
        .with_columns(
            pl.when(pl.col("_nf") != n)
            .then(pl.format("malformed row: {} fields, expected {}", pl.col("_nf"), pl.lit(n)))
            .otherwise(None)
            .alias(REASON)
        )
        .drop("_nf")
    )


def add_reason(df: pl.DataFrame, cond: pl.Expr, reason: str | pl.Expr) -> pl.DataFrame:
    """Set REASON where it is still null and `cond` holds (first reason wins)."""
    r = pl.lit(reason) if isinstance(reason, str) else reason
    return df.with_columns(
        pl.when(pl.col(REASON).is_null() & cond.fill_null(True))
        .then(r)
        .otherwise(pl.col(REASON))
        .alias(REASON)
    )


def account(fr: FileRead, df: pl.DataFrame, keep: int = 200) -> pl.DataFrame:
    """Count df's rejected rows into fr (with reasons; ``rows_in`` is counted from the
    file by `count_input`); return the good rows."""
    bad = df.filter(pl.col(REASON).is_not_null())
    if bad.height:
        for reason, n in bad.group_by(REASON).len().iter_rows():
            fr.rows_rejected += int(n)
            fr.row_reasons[str(reason)] += int(n)
        for row_no, line, reason in bad.select(ROWNO, LINE, REASON).head(keep).iter_rows():
            if len(fr.rejected_rows) < keep:
                fr.rejected_rows.append(
                    {"reason": reason, "row": {"line_no": int(row_no), "line": line}}
                )
    return df.filter(pl.col(REASON).is_null())


def ticks_expr(price: pl.Expr, tick_size: float) -> pl.Expr:
    """Integer ticks of a Float64 price (null when off the grid by > 1e-6 tick).

    Prices parsed from decimal text are within float rounding of the grid; a relative
    tolerance of 1e-6 tick separates rounding from a real off-grid price."""
    t = (price / tick_size).round(0)
    return (
        pl.when((price - t * tick_size).abs() <= tick_size * 1e-6)
        .then(t.cast(pl.Int64))
        .otherwise(None)
    )


def off_tick(price: pl.Expr, tick_size: float) -> pl.Expr:
    t = (price / tick_size).round(0)
    return (price - t * tick_size).abs() > tick_size * 1e-6


def int_expr(x: pl.Expr) -> pl.Expr:
    """Int64 of numeric text that is integral ("100", "100.0"); null otherwise."""
    f = x.cast(pl.Float64, strict=False)
    return pl.when(f == f.round(0)).then(f.cast(pl.Int64, strict=False)).otherwise(None)
