"""Downloads against a local HTTP server (loopback only): resume, checksum, atomic rename."""
import hashlib
import http.server
import threading
import zipfile

import pytest

from studylib.download import DownloadError, download, extract

PAYLOAD = bytes(range(256)) * 4000  # about 1 MB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    fail_after = None  # bytes to send before dropping the connection (simulates a broken download)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if RangeHandler.fail_after is not None:
            self.wfile.write(body[:RangeHandler.fail_after])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/data.bin"
    httpd.shutdown()
    RangeHandler.fail_after = None


def test_broken_download_resumes_and_verifies(server, tmp_path):
    dest = tmp_path / "data.bin"
    RangeHandler.fail_after = 300_000
    with pytest.raises(DownloadError, match="resume"):
        download(server, dest, progress=False, timeout=5)
    assert not dest.exists() and (tmp_path / "data.bin.part").stat().st_size == 300_000
    RangeHandler.fail_after = None
    download(server, dest, hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="does not match"):
        download(server, tmp_path / "x.bin", "0" * 64, progress=False)
    assert not list(tmp_path.iterdir())


def test_extract_lifts_a_single_top_folder(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("NCT/ADI/x.txt", "1")
    extract(archive, tmp_path / "train")
    assert (tmp_path / "train" / "ADI" / "x.txt").read_text() == "1"
