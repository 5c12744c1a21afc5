"""YouTube failures: throttling is temporary (back off, stop after N in a row), gone videos are final.

The messages are yt-dlp's stderr as users of AudioSet downloaders report them (yt-dlp 2024-2026).
"""

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from audioclip.data.audioset.download import download
from audioclip.data.audioset.manifests import read_manifest
from audioclip.data.audioset.metadata import Segment
from audioclip.data.audioset.prepare import main
from audioclip.data.audioset.youtube import ThrottledError, classify, ytdlp_options

HINT = (
    "Use --cookies-from-browser or --cookies for the authentication. See  https://github.com/yt-dlp/yt-dlp/wiki/FAQ"
    "#how-do-i-pass-cookies-to-yt-dlp  for how to manually pass cookies. Also see  https://github.com/yt-dlp/yt-dlp/"
    "wiki/Extractors#exporting-youtube-cookies  for tips on effectively exporting YouTube cookies"
)
THROTTLED = {
    "bot check": f"ERROR: [youtube] --4gqARaEJE: Sign in to confirm you\u2019re not a bot. {HINT}",
    "bot check, ascii": f"ERROR: [youtube] --4gqARaEJE: Sign in to confirm you're not a bot. {HINT}",
    "429": "ERROR: unable to download video data: HTTP Error 429: Too Many Requests",
    "rate-limited": (
        "ERROR: [youtube] --4gqARaEJE: Video unavailable. This content isn't available, try again later. The current "
        "session has been rate-limited by YouTube for up to an hour. It is recommended to use `-t sleep` to add a "
        "delay between video requests to avoid exceeding the rate limit."
    ),
}
GONE = {
    "unavailable": "ERROR: [youtube] --4gqARaEJE: Video unavailable",
    "private": (
        f"ERROR: [youtube] --4gqARaEJE: Private video. Sign in if you've been granted access to this video. {HINT}"
    ),
    "terminated": (
        "ERROR: [youtube] --4gqARaEJE: Video unavailable. This video is no longer available because the YouTube "
        "account associated with this video has been terminated."
    ),
    "removed": "ERROR: [youtube] --4gqARaEJE: This video has been removed for violating YouTube's Terms of Service",
    "age gate": (
        f"ERROR: [youtube] --4gqARaEJE: Sign in to confirm your age. This video may be inappropriate for some users. "
        f"{HINT}"
    ),
    "country": "ERROR: [youtube] --4gqARaEJE: The uploader has not made this video available in your country",
}
NETWORK = {
    "dns": (
        "ERROR: [youtube] --4gqARaEJE: Unable to download API page: <urlopen error [Errno -3] Temporary failure in "
        "name resolution> (caused by TransportError(...))"
    ),
    "reset": (
        "ERROR: unable to download video data: ('Connection aborted.', ConnectionResetError(104, 'reset by peer'))"
    ),
}


@pytest.mark.parametrize("name", THROTTLED)
def test_throttling_is_temporary(name: str) -> None:
    assert classify(THROTTLED[name]) == ("temporary", True)


@pytest.mark.parametrize("name", GONE)
def test_gone_videos_are_final(name: str) -> None:
    assert classify(GONE[name]) == ("final", False)


@pytest.mark.parametrize("name", NETWORK)
def test_network_trouble_is_temporary_but_not_throttling(name: str) -> None:
    assert classify(NETWORK[name]) == ("temporary", False)


def test_ytdlp_options_pass_through() -> None:
    options = ytdlp_options("c.txt", 1.5, 3, "socks5://127.0.0.1:1080", "2M", "--extractor-args 'youtube:x=y'")
    assert options == [
        "--cookies", "c.txt", "--sleep-requests", "1.5", "--sleep-interval", "3",
        "--proxy", "socks5://127.0.0.1:1080", "--limit-rate", "2M", "--extractor-args", "youtube:x=y",
    ]  # fmt: skip


class FakeYtDlp:
    """Stands in for the yt-dlp process: answers each YTID with ``outcomes[ytid]`` (an stderr text, or "ok")."""

    def __init__(self, outcomes: dict[str, str]) -> None:
        self.outcomes = outcomes
        self.calls: list[list[str]] = []

    def __call__(self, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        self.calls.append(cmd)
        ytid = cmd[-1].rsplit("=", 1)[-1]
        outcome = self.outcomes[ytid]
        if outcome == "ok":
            Path(cmd[cmd.index("--output") + 1].replace("%(ext)s", "mp4")).write_bytes(b"video")
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 1, "", outcome)


SEGMENTS = [Segment(f"ytid{i:07d}", 0.0, 10.0, ("/m/09x0r",)) for i in range(6)]


def test_throttled_downloads_back_off_stop_and_are_retried_gone_ones_are_not(tmp_path: Path, monkeypatch) -> None:
    fake = FakeYtDlp({s.ytid: THROTTLED["bot check"] for s in SEGMENTS})
    monkeypatch.setattr(subprocess, "run", fake)
    waits: list[float] = []
    monkeypatch.setattr("audioclip.data.audioset.youtube.time.sleep", waits.append)
    options = {"workers": 1, "sections": False, "options": ["--cookies", "c.txt"], "max_throttled": 3, "backoff": 5}
    with pytest.raises(ThrottledError, match=r"throttled 3 downloads in a row .*not a bot.*--retry-failed"):
        download(SEGMENTS, tmp_path, **options)
    assert waits == [5, 10]  # doubling back-off before the 2nd and 3rd try, then the stop
    assert len(fake.calls) == 3 and all(c[c.index("--cookies") + 1] == "c.txt" for c in fake.calls)
    records = read_manifest(tmp_path, "sources")
    assert len(records) == 3 and all(r["failure"] == "temporary" and r["throttled"] for r in records.values())

    # the block lifts: one video turns out deleted, the others download
    fake.outcomes = {s.ytid: "ok" for s in SEGMENTS} | {"ytid0000000": GONE["terminated"]}
    assert download(SEGMENTS, tmp_path, **options, retry_failed=True) == Counter(ok=5, failed=1)
    assert read_manifest(tmp_path, "sources")["ytid0000000"]["failure"] == "final"
    fake.calls.clear()
    assert download(SEGMENTS, tmp_path, **options, retry_failed=True) == Counter()  # a gone video is not retried
    assert fake.calls == []


def test_cli_exits_3_saying_why_when_youtube_throttles(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(subprocess, "run", FakeYtDlp({s.ytid: THROTTLED["429"] for s in SEGMENTS}))
    csv = tmp_path / "segments.csv"
    csv.write_text("".join(f'{s.ytid}, 0.000, 10.000, "/m/09x0r"\n' for s in SEGMENTS))
    argv = ["download", "--segments", str(csv), "--root", str(tmp_path), "--workers", "1", "--full-videos"]
    assert main([*argv, "--max-throttled", "2", "--backoff", "0"]) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("stopped: YouTube throttled 2 downloads in a row (last: ERROR: unable to download video")
    with pytest.raises(FileNotFoundError, match="--cookies nowhere.txt: no such file"):
        main([*argv, "--cookies", "nowhere.txt"])
    assert json.loads((tmp_path / "manifests" / "sources.0-of-1.jsonl").read_text().splitlines()[0])["throttled"]
