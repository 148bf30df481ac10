"""Downloads against a local HTTP server (loopback only): resume, checksum, atomic rename; extraction
that never deletes or overwrites the user's files (refuse, or --merge only what is missing)."""
import hashlib
import http.server
import threading
import zipfile
from types import SimpleNamespace

import pytest

from studylib.cli import main
from studylib.data.download import DownloadError, download, extract

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


# --- extraction never deletes what the user had (the target folder used to be rmtree'd) -------------

def make_zip(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def tree(folder):
    """Every file below `folder` (relative path -> text), temporary folders included."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def toy_dataset(monkeypatch, tmp_path):
    """`download toy` fetches a local zip: no server, and no dependence on the real registry's URLs."""
    archive = make_zip(tmp_path / "toy.zip", {"toy/ADI/a.txt": "new", "toy/MUC/m.txt": "m"})
    info = SimpleNamespace(name="toy", obtain="", downloads=(("http://example.invalid/toy.zip", "", ""),))
    monkeypatch.setattr("studylib.data.datasets.get_dataset_info", lambda name: info)
    monkeypatch.setattr("studylib.data.download.download", lambda url, dest, *args, **kwargs: archive)
    return archive


def test_non_empty_target_is_refused_and_kept(tmp_path):
    into = tmp_path / "train"
    (into / "ADI").mkdir(parents=True)
    (into / "ADI" / "mine.txt").write_text("user data")
    archive = make_zip(tmp_path / "a.zip", {"NCT/ADI/x.txt": "1"})
    with pytest.raises(DownloadError) as err:
        extract(archive, into)
    message = str(err.value)
    assert str(into) in message and "nothing was changed" in message and "--merge" in message
    assert "\n" not in message
    assert tree(tmp_path / "train") == {"ADI/mine.txt": "user data"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "train"]  # no temporary folder


def test_cli_refuses_a_non_empty_root(toy_dataset, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    assert main(["download", "toy", "--root", str(root)]) == 2
    assert "not an empty folder; nothing was changed" in capsys.readouterr().err
    assert tree(root) == {"notes.txt": "keep me"}


def test_cli_merge_keeps_user_files_and_adds_the_archives(toy_dataset, tmp_path, capsys):
    root = tmp_path / "data"
    (root / "ADI").mkdir(parents=True)
    (root / "ADI" / "mine.txt").write_text("user data")
    (root / "notes.txt").write_text("keep me")
    assert main(["download", "toy", "--root", str(root), "--merge"]) == 0
    assert f"toy is in {root}" in capsys.readouterr().out
    assert tree(root) == {"ADI/a.txt": "new", "ADI/mine.txt": "user data", "MUC/m.txt": "m", "notes.txt": "keep me"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "toy.zip"]
    # merging the same archive again is a no-op: identical files are not conflicts
    assert main(["download", "toy", "--root", str(root), "--merge"]) == 0
    assert len(tree(root)) == 4


def test_merge_conflict_refuses_before_moving_anything(toy_dataset, tmp_path, capsys):
    root = tmp_path / "data"
    (root / "ADI").mkdir(parents=True)
    (root / "ADI" / "a.txt").write_text("user's own a.txt")  # the archive has a different ADI/a.txt
    assert main(["download", "toy", "--root", str(root), "--merge"]) == 2
    err = capsys.readouterr().err
    assert "cannot merge" in err and str(root / "ADI" / "a.txt") in err and "nothing was changed" in err
    assert tree(root) == {"ADI/a.txt": "user's own a.txt"}  # MUC/m.txt was not moved in either
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "toy.zip"]


def test_merge_conflicts_name_at_most_three_paths(tmp_path):
    into = tmp_path / "x"
    into.mkdir()
    names = [f"f{i}.txt" for i in range(5)]
    for name in names:
        (into / name).write_text("old")
    with pytest.raises(DownloadError, match=r"5 existing path\(s\).*and 2 more") as err:
        extract(make_zip(tmp_path / "a.zip", {name: "new" for name in names}), into, merge=True)
    assert str(into / "f3.txt") not in str(err.value)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_stale_extraction_folders_are_cleaned(tmp_path):
    for stale in (".train.extracting", ".train.extracting-lifted"):  # left by a killed extraction
        (tmp_path / stale / "half").mkdir(parents=True)
    extract(make_zip(tmp_path / "a.zip", {"x.txt": "1"}), tmp_path / "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "train"]
    assert tree(tmp_path / "train") == {"x.txt": "1"}


def test_empty_existing_target_is_filled(tmp_path):
    (tmp_path / "train").mkdir()
    extract(make_zip(tmp_path / "a.zip", {"NCT/ADI/x.txt": "1", "NCT/MUC/y.txt": "2"}), tmp_path / "train")
    assert tree(tmp_path / "train") == {"ADI/x.txt": "1", "MUC/y.txt": "2"}


def test_corrupt_archive_is_a_clear_error_and_leaves_nothing(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"<html>503 Service Unavailable</html>")
    with pytest.raises(DownloadError, match=r"a\.zip is not a valid zip archive \(.*\); delete it and download again"):
        extract(archive, tmp_path / "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_cli_corrupt_archive_exits_2(toy_dataset, tmp_path, capsys):
    toy_dataset.write_bytes(b"not a zip")
    assert main(["download", "toy", "--root", str(tmp_path / "data")]) == 2
    assert "is not a valid zip archive" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.zip"]


def test_an_offline_download_says_nothing_was_received_not_a_part_file_that_does_not_exist(tmp_path):
    closed = "http://127.0.0.1:9/data.bin"  # the discard port: nothing listens there
    with pytest.raises(DownloadError, match=r"nothing was received: check the connection .*download .* by hand"):
        download(closed, tmp_path / "data.bin", progress=False, timeout=5)
    assert not (tmp_path / "data.bin.part").exists()


def test_two_downloads_of_one_file_at_once_give_the_file_once(server, tmp_path):
    dest = tmp_path / "data.bin"
    errors = []

    def fetch():
        try:
            download(server, dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
        except Exception as err:  # collected: the assertion below says which
            errors.append(err)
    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and dest.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()
