"""YouTube as it behaves at two million requests: yt-dlp options, failure classes, back-off on throttling.

A failed download is *final* when the video itself is gone (removed, private, terminated account, blocked in this
country, age-gated without cookies) and *temporary* otherwise: throttling (HTTP 429, "confirm you're not a bot",
"rate-limited by YouTube", a captcha), network trouble, or an error this module does not know. ``--retry-failed``
retries only temporary failures, so a re-run does not spend requests on deleted videos. The messages are yt-dlp's
own (``yt_dlp/extractor/youtube/_video.py``, ``yt_dlp/networking/exceptions.py``); at AudioSet scale LAION-CLAP and
video2dataset users meet the same ones, and both recommend cookies, sleeps between requests and proxies.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass

# checked in this order: an age gate also says "Sign in to confirm", and a rate limit also says "Video unavailable"
_AGE_GATE = re.compile(r"confirm your age|age-restricted|inappropriate for some users", re.I)
_THROTTLED = re.compile(
    r"HTTP Error 429|Too Many Requests|not a bot|Sign in to confirm you|rate-limited|rate limit|"
    r"try again later|captcha",
    re.I,
)
_GONE = re.compile(
    r"Video unavailable|Private video|video is private|has been removed|account associated with this video|"
    r"no longer available|not made this video available in your country|blocked it in your country|"
    r"not available from your location|"
    r"copyright|members-only|join this channel|This live event|Premieres in|does not exist|"
    r"HTTP Error 404|HTTP Error 410",
    re.I,
)

TEMPORARY, FINAL = "temporary", "final"


def classify(message: str) -> tuple[str, bool]:
    """(``"temporary"`` or ``"final"``, throttled?) of a failed yt-dlp run's stderr."""
    if _AGE_GATE.search(message):
        return FINAL, False  # without cookies of a signed-in adult account this video will not download
    if _THROTTLED.search(message):
        return TEMPORARY, True
    if _GONE.search(message):
        return FINAL, False
    return TEMPORARY, False  # network trouble or an unknown error: worth one more try later


def ytdlp_options(
    cookies: str | None = None,
    sleep_requests: float | None = None,
    sleep_interval: float | None = None,
    proxy: str | None = None,
    limit_rate: str | None = None,
    extra: str | None = None,
) -> list[str]:
    """yt-dlp command-line options: cookies file, sleeps, proxy, rate limit, and ``extra`` (a shell-quoted string)."""
    options: list[str] = []
    if cookies:
        options += ["--cookies", cookies]
    if sleep_requests:
        options += ["--sleep-requests", f"{sleep_requests:g}"]
    if sleep_interval:
        options += ["--sleep-interval", f"{sleep_interval:g}"]
    if proxy:
        options += ["--proxy", proxy]
    if limit_rate:
        options += ["--limit-rate", limit_rate]
    return options + (shlex.split(extra) if extra else [])


class ThrottledError(RuntimeError):
    """YouTube throttled too many downloads in a row; the message says what to do."""


@dataclass
class Throttle:
    """Back off after each throttled download (doubling, capped) and stop after ``max_in_a_row`` in a row."""

    max_in_a_row: int = 10
    backoff: float = 60.0  # seconds after the first throttled download; doubles with each one in a row
    max_backoff: float = 900.0
    in_a_row: int = 0

    def after(self, record: dict) -> None:
        """Called with each download's manifest record before the next download starts."""
        if not record.get("throttled"):
            self.in_a_row = 0
            return
        self.in_a_row += 1
        if self.in_a_row >= self.max_in_a_row:
            raise ThrottledError(
                f"stopped: YouTube throttled {self.in_a_row} downloads in a row (last: {record.get('reason', '')}); "
                "these clips are temporary failures: wait, or pass --cookies / --proxy / --sleep-requests, then re-run "
                "with --retry-failed"
            )
        time.sleep(min(self.backoff * 2 ** (self.in_a_row - 1), self.max_backoff))
