"""Download BitMEX public daily dumps over HTTP with retries and resume (adapter).

Layout of the public bucket: ``<base>/<kind>/<YYYYMMDD>.csv.gz`` with kind ``trade`` or
``quote``. A download goes to ``<file>.part`` and resumes it with an HTTP ``Range``
request (a server answering 200 instead of 206 restarts it); the complete file is
renamed into place, so a finished file is never partial. An existing complete file
is not downloaded again. A 404 is reported as missing (no retry); network errors and
5xx, 408 and 429 answers are retried with exponential backoff. What a retry cannot change
fails at once with DownloadRefused: any other 4xx answer, and a host that cannot be
resolved or refuses the connection before it has answered once in this download (a wrong
--url; once it has answered, a refused connection is a blip and is retried).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx

KINDS = ("trade", "quote")


class DownloadError(RuntimeError):
    """A file could not be downloaded after every retry."""


class DownloadRefused(DownloadError):
    """The request was refused in a way no retry changes (HTTP 4xx, unknown host, a host
    that never answered refusing the connection): raised at once, never retried."""


RETRIED_4XX = (408, 429)  # request timeout, too many requests: worth another attempt


def refused(status: int) -> bool:
    """True for an HTTP status no retry changes: 4xx except 404 (a missing day, reported),
    408 and 429 (worth another attempt), 416 (a complete part, handled). Pure."""
    return 400 <= status < 500 and status not in (404, 416, *RETRIED_4XX)


@dataclass
class DownloadReport:
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already complete
    missing: list[str] = field(default_factory=list)  # 404 on the server
    resumed: int = 0
    attempts: int = 0
    answered: bool = False  # the server answered at least once (not in as_dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "downloaded": self.downloaded,
            "skipped": self.skipped,
            "missing": self.missing,
            "resumed": self.resumed,
            "attempts": self.attempts,
        }


def dump_days(start: str, end: str) -> list[str]:
    """Inclusive list of ``YYYYMMDD`` from ISO dates `start`..`end`. Raises ValueError."""
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    if d1 < d0:
        raise ValueError(f"end {end} is before start {start}")
    return [(d0 + timedelta(days=i)).strftime("%Y%m%d") for i in range((d1 - d0).days + 1)]


def _fetch(
    client: httpx.Client, url: str, target: Path, report: DownloadReport, chunk: int = 1 << 16
) -> bool:
    """One attempt; True when complete, False on 404. Raises httpx errors to retry."""
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with client.stream("GET", url, headers=headers) as r:
        report.answered = True
        if r.status_code == 404:
            return False
        if r.status_code == 416:  # nothing left: the part is complete
            os.replace(part, target)
            return True
        if r.status_code >= 500:
            raise httpx.HTTPStatusError(
                f"server error {r.status_code}", request=r.request, response=r
            )
        if refused(r.status_code):
            raise DownloadRefused(
                f"{url}: HTTP {r.status_code} {r.reason_phrase} (refused; not retried)"
            )
        r.raise_for_status()
        mode = "ab" if (have and r.status_code == 206) else "wb"
        if mode == "ab":
            report.resumed += 1
        expected = r.headers.get("content-length")
        written = 0
        with open(part, mode) as fh:
            for data in r.iter_bytes(chunk):
                fh.write(data)
                written += len(data)
            fh.flush()
            os.fsync(fh.fileno())
        if expected is not None and written != int(expected):
            raise httpx.ReadError(f"short body: {written} of {expected} bytes")
    os.replace(part, target)
    return True


def download_file(
    url: str,
    target: str | Path,
    retries: int = 4,
    backoff_s: float = 0.5,
    client: httpx.Client | None = None,
    report: DownloadReport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Download `url` to `target` (resuming a previous part). True when the file is
    there, False when the server says 404. Raises DownloadRefused at once when a retry
    cannot help (see the module docstring), DownloadError after `retries` retries."""
    target = Path(target)
    report = report if report is not None else DownloadReport()
    if target.exists():
        report.skipped.append(str(target))
        return True
    target.parent.mkdir(parents=True, exist_ok=True)
    own = client is None
    client = client or httpx.Client(
        timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=True
    )
    try:
        last: Exception | None = None
        for attempt in range(retries + 1):
            report.attempts += 1
            try:
                if _fetch(client, url, target, report):
                    report.downloaded.append(str(target))
                    return True
                report.missing.append(url)
                return False
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if isinstance(exc, httpx.ConnectError) and not report.answered:
                    # unknown host or nothing listening, before any answer: a wrong URL
                    raise DownloadRefused(
                        f"{url}: cannot connect ({exc}); not retried: is the URL right?"
                    ) from exc
                last = exc
                if attempt < retries:
                    sleep(backoff_s * (2**attempt))
        raise DownloadError(f"{url}: failed after {retries + 1} attempts: {last}")
    finally:
        if own:
            client.close()


def preflight(
    base_url: str, start: str, kinds: tuple[str, ...] = KINDS, timeout_s: float = 5.0
) -> None:
    """One HEAD request for the first file of a range, before any work starts: a wrong
    host or a refusing server fails in a second instead of after a flow has started.
    Raises DownloadRefused (unknown host, connection refused, a refused status; a 405
    only refuses HEAD and passes), ValueError for a bad date or kind. Anything else
    (a timeout, 5xx) passes: the download itself retries those."""
    if not kinds or kinds[0] not in KINDS:
        raise ValueError(f"unknown dump kind {kinds[0] if kinds else ''!r}")
    url = f"{base_url.rstrip('/')}/{kinds[0]}/{dump_days(start, start)[0]}.csv.gz"
    try:
        status = httpx.head(url, timeout=timeout_s, follow_redirects=True).status_code
    except httpx.ConnectError as exc:
        raise DownloadRefused(f"{url}: cannot connect ({exc}); is the URL right?") from exc
    except httpx.HTTPError:
        return
    if refused(status) and status != 405:
        raise DownloadRefused(f"{url}: HTTP {status} (refused; not retried)")


def download_range(
    base_url: str,
    start: str,
    end: str,
    dest_dir: str,
    kinds: tuple[str, ...] = KINDS,
    retries: int = 4,
    backoff_s: float = 0.5,
) -> dict[str, object]:
    """Download every ``<kind>/<YYYYMMDD>.csv.gz`` from `start` to `end` into
    ``dest_dir/<kind>/``. Returns the DownloadReport as a dict."""
    report = DownloadReport()
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=True) as client:
        for kind in kinds:
            if kind not in KINDS:
                raise ValueError(f"unknown dump kind {kind!r}")
            for day in dump_days(start, end):
                url = f"{base_url.rstrip('/')}/{kind}/{day}.csv.gz"
                download_file(
                    url, Path(dest_dir) / kind / f"{day}.csv.gz", retries, backoff_s, client, report
                )
    return report.as_dict()
