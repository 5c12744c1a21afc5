"""The download stage runs the real yt-dlp on local media: no network.

yt-dlp reads ``file://`` URLs with ``--enable-file-urls`` but cannot cut a time range from them: its ffmpeg
downloader (needed by ``--download-sections``) only takes http(s)/ftp/m3u8/rtmp/dash URLs ("This format cannot be
partially downloaded"). So ``file://`` is tested with whole videos (the segment's offset is applied by extract) and
the range download against a local HTTP server.
"""

import functools
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audioclip.data.audioset.download import download, find_ffmpeg
from audioclip.data.audioset.extract import clip_dir, extract
from audioclip.data.audioset.manifests import read_manifest
from audioclip.data.audioset.metadata import read_segments
from audioclip.data.audioset.testmedia import nearest_frame_index, write_test_video

YTID, MISSING = "--4gqARaEJE", "--BfvyPmVMo"  # real eval YTIDs


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    """A 4 s video of YTID (frame colour = tenth of the 4 s) and a segment list asking for 1..3 s of it."""
    write_test_video(tmp_path / "site" / f"{YTID}.mp4", seconds=4.0)
    rows = f'{YTID}, 1.000, 3.000, "/m/09x0r"\n{MISSING}, 0.0, 2.0, "/m/09x0r"\n'
    (tmp_path / "segments.csv").write_text("# YTID, start_seconds, end_seconds, positive_labels\n" + rows)
    return tmp_path


@pytest.fixture()
def http_url(site: Path) -> Iterator[str]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site / "site"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{{ytid}}.mp4"
    server.shutdown()


def frames_of(root: Path) -> list[int]:
    return [
        nearest_frame_index(np.asarray(Image.open(clip_dir(root, YTID) / f"{k}.jpg")).reshape(-1, 3).mean(axis=0))
        for k in range(10)
    ]


def test_whole_video_from_a_file_url_is_cut_by_extract(site: Path) -> None:
    root = site / "root"
    segments = read_segments(site / "segments.csv")
    counts = download(segments, root, url_template=f"file://{site}/site/{{ytid}}.mp4", sections=False, workers=1)
    assert counts == Counter(ok=1, failed=1)
    sources = read_manifest(root, "sources")
    assert sources[YTID]["offset"] == 1.0 and Path(sources[YTID]["path"]).is_file()
    assert "No such file" in sources[MISSING]["reason"]
    assert extract(segments, root, workers=1) == Counter(ok=1)
    # 1..3 s of a 4 s video whose colour changes every 0.4 s: tenths 2..7, each frame 0.2 s apart
    assert frames_of(root) == [2, 3, 3, 4, 4, 5, 5, 6, 6, 7]
    assert download(segments, root, url_template="file:///nowhere/{ytid}.mp4", sections=False, workers=1) == Counter()


@pytest.mark.skipif(find_ffmpeg() is None, reason="range downloads need ffmpeg (system or imageio-ffmpeg)")
def test_segment_range_download_over_http(site: Path, http_url: str) -> None:
    root = site / "root"
    segments = read_segments(site / "segments.csv")
    assert download(segments, root, url_template=http_url, workers=2) == Counter(ok=1, failed=1)
    sources = read_manifest(root, "sources")
    assert sources[YTID]["offset"] == 0.0 and Path(sources[YTID]["path"]).name == f"{YTID}_1.000.mp4"
    assert "404" in sources[MISSING]["reason"]
    assert extract(segments, root, workers=1) == Counter(ok=1)
    assert frames_of(root) == [2, 3, 3, 4, 4, 5, 5, 6, 6, 7]
