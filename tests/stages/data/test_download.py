"""Downloads from a server on loopback: complete, resumed, verified, or a clear error."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.stages.data import DataError
from pipeline.stages.data.download import fetch

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path, honouring `Range: bytes=N-` like real file servers."""

    requests: list[str | None] = []  # noqa: RUF012 - shared record of Range headers

    def do_GET(self) -> None:
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        self.requests.append(wanted)
        start = int(wanted.split("=")[1].rstrip("-")) if wanted else 0
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        self.wfile.write(PAYLOAD[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _RangeHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_is_verified_and_cached(server: str, tmp_path: Path) -> None:
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    path = fetch(f"{server}/data/notMNIST_tiny.tar.gz", tmp_path, len(PAYLOAD), digest)
    assert path == tmp_path / "notMNIST_tiny.tar.gz"
    assert path.read_bytes() == PAYLOAD
    fetch(f"{server}/data/notMNIST_tiny.tar.gz", tmp_path, len(PAYLOAD), digest)
    assert len(_RangeHandler.requests) == 1  # the second call used the cached file


def test_interrupted_download_resumes(server: str, tmp_path: Path) -> None:
    (tmp_path / "notMNIST_tiny.tar.gz.part").write_bytes(PAYLOAD[:1000])
    path = fetch(f"{server}/notMNIST_tiny.tar.gz", tmp_path, len(PAYLOAD))
    assert _RangeHandler.requests == ["bytes=1000-"]
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "notMNIST_tiny.tar.gz.part").exists()


def test_size_or_checksum_mismatch(server: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has 102,400 bytes, expected 8,458,043"):
        fetch(f"{server}/a.tar.gz", tmp_path / "a", expected_size=8458043)
    with pytest.raises(DataError, match="sha256 .* expected 0000"):
        fetch(f"{server}/b.tar.gz", tmp_path / "b", sha256="0" * 64)


def test_offline_error_says_where_to_put_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        fetch("http://127.0.0.1:9/notMNIST_small.tar.gz", tmp_path, expected_size=8458043)
    message = str(info.value)
    assert "cannot download http://127.0.0.1:9/notMNIST_small.tar.gz" in message
    assert f"place the file (8,458,043 bytes) at {tmp_path / 'notMNIST_small.tar.gz'}" in message


def test_http_error(server: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="HTTP 404"):
        fetch(f"{server}/missing/x.tar.gz", tmp_path)


def test_unwritable_download_folder_is_one_line(server: str, tmp_path: Path) -> None:
    """Under a regular file, which stops root too (chmod would not)."""
    (tmp_path / "a-file").write_text("not a folder")
    folder = tmp_path / "a-file" / "downloads"
    with pytest.raises(DataError, match=rf"in {folder} \(Not a directory\): set data.cache_dir"):
        fetch(f"{server}/x.tar.gz", folder)
