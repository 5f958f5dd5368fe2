"""Downloads against a local HTTP server on 127.0.0.1 (never the internet) and safe archive reading."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.data.download import (
    RemoteFile,
    download,
    fetch,
    iter_tar,
    read_members,
    safe_extract,
)

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    ranges_seen: list[str | None] = []
    honour_range = True

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        body = self.files.get(self.path)
        rng = self.headers.get("Range")
        self.ranges_seen.append(rng)
        if body is None:
            self.send_error(404)
            return
        if rng and self.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Handler,), {"files": {"/data.bin": PAYLOAD}, "ranges_seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_and_renames(server, tmp_path):
    url, handler = server
    dest = download(f"{url}/data.bin", tmp_path / "d" / "data.bin", md5=MD5, sha256=SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "d" / "data.bin.part").exists()
    assert handler.ranges_seen == [None]


def test_download_resumes_partial_file(server, tmp_path):
    url, handler = server
    part = tmp_path / "data.bin.part"
    part.write_bytes(PAYLOAD[:3000])
    dest = download(f"{url}/data.bin", tmp_path / "data.bin", sha256=SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert handler.ranges_seen == ["bytes=3000-"]


def test_download_restarts_when_server_ignores_range(server, tmp_path):
    url, handler = server
    handler.honour_range = False
    (tmp_path / "data.bin.part").write_bytes(b"x" * 100)  # garbage that must not survive
    dest = download(f"{url}/data.bin", tmp_path / "data.bin", md5=MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_complete_part_file_gets_416_and_is_used(server, tmp_path):
    url, _ = server
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    assert download(f"{url}/data.bin", tmp_path / "data.bin", md5=MD5, progress=False).read_bytes() == PAYLOAD


def test_download_bad_checksum_deletes_part_and_names_problem(server, tmp_path):
    url, _ = server
    with pytest.raises(HydraMixError, match="wrong md5 checksum"):
        download(f"{url}/data.bin", tmp_path / "data.bin", md5="0" * 32, progress=False)
    assert not (tmp_path / "data.bin").exists()
    assert not (tmp_path / "data.bin.part").exists()


def test_download_network_failure_says_where_to_put_the_file(server, tmp_path):
    url, _ = server
    with pytest.raises(HydraMixError, match=r"cannot download .*missing.bin.*place the file at .* manually"):
        download(f"{url}/missing.bin", tmp_path / "missing.bin", md5=MD5, progress=False)
    # a port nobody listens on
    with pytest.raises(HydraMixError, match="cannot download"):
        download("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", md5=MD5, progress=False, timeout=2)
    assert not (tmp_path / "x.bin").exists()


def test_fetch_uses_existing_verified_file_without_network(tmp_path):
    (tmp_path / "data.bin").write_bytes(PAYLOAD)
    remote = RemoteFile("http://127.0.0.1:9/never-contacted", "data.bin", md5=MD5)
    assert fetch(remote, tmp_path, progress=False) == tmp_path / "data.bin"


def test_fetch_rejects_existing_file_with_wrong_checksum(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"not it")
    remote = RemoteFile("http://127.0.0.1:9/never-contacted", "data.bin", sha256=SHA256)
    with pytest.raises(HydraMixError, match="wrong sha256 checksum.*delete it"):
        fetch(remote, tmp_path, progress=False)
    assert (tmp_path / "data.bin").read_bytes() == b"not it"  # left for the user to inspect


def test_fetch_downloads_when_absent(server, tmp_path):
    url, _ = server
    path = fetch(RemoteFile(f"{url}/data.bin", "data.bin", md5=MD5), tmp_path, progress=False)
    assert file_digest(path, "sha256") == SHA256


def test_remote_file_needs_a_checksum():
    with pytest.raises(ValueError):
        RemoteFile("http://x", "x")


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_safe_extract_and_read_members(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", [("a/b.txt", b"hello"), ("c.txt", b"x"), _link("a/l", "b.txt")])
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "a" / "b.txt").read_bytes() == b"hello"
    assert read_members(archive, {"a/b.txt"}) == {"a/b.txt": b"hello"}
    with pytest.raises(HydraMixError, match="lacks nope"):
        read_members(archive, {"nope"})


@pytest.mark.parametrize(
    "member",
    [
        ("../evil.txt", b"x"),
        ("a/../../evil.txt", b"x"),
        ("/etc/evil.txt", b"x"),
        _link("a/l", "../../outside"),
        _link("l", "/etc/passwd"),
        _link("h", "../x", tarfile.LNKTYPE),
    ],
)
def test_safe_extract_rejects_escaping_members(tmp_path, member):
    archive = _tar(tmp_path / "bad.tar", [("fine.txt", b"ok"), member], mode="w")
    with pytest.raises(HydraMixError, match="escape|outside"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / ".out.tmp").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_zip_traversal_rejected(tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(HydraMixError, match="path traversal"):
        safe_extract(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_archives_are_clear_errors(tmp_path):
    good = _tar(tmp_path / "g.tar.gz", [("a.txt", b"a" * 5000)])
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(HydraMixError, match="truncated archive"):
        list(iter_tar(truncated))
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not an archive at all" * 40)
    with pytest.raises(HydraMixError, match="corrupt or unreadable archive"):
        read_members(junk, {"a.txt"})


# --- truncation: an archive is read to its end ----------------------------------------------------------------


def _small_archive(path: Path, mode: str) -> Path:
    """Six members of incompressible bytes (so that every cut lands in a different place of the content)."""
    rng = random.Random(0)
    with tarfile.open(path, mode) as tar:
        for i in range(6):
            data = rng.randbytes(300 + 150 * i)
            info = tarfile.TarInfo(f"top/train/c{i % 2}/{i}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _cut_points(size: int, end: int) -> list[int]:
    """0, 1, about 40 spread over [0, end), and the last bytes before ``end``."""
    spread = {round(i * end / 41) for i in range(1, 41)}
    return sorted({0, 1, *spread, end - 512, end - 8, end - 4, end - 1} - {size})


@pytest.mark.parametrize(("mode", "suffix"), [("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")])
def test_every_cut_of_a_compressed_archive_is_refused_as_truncated(tmp_path, mode, suffix):
    full = _small_archive(tmp_path / f"full{suffix}", mode).read_bytes()
    assert len(list(iter_tar(tmp_path / f"full{suffix}"))) == 6
    cut = tmp_path / f"cut{suffix}"
    for point in _cut_points(len(full), len(full)):  # every cut loses at least the stream's end
        cut.write_bytes(full[:point])
        with pytest.raises(HydraMixError, match=rf"^{re.escape(str(cut))}: truncated archive: "):
            list(iter_tar(cut))


def test_every_cut_of_a_plain_tar_before_its_end_blocks_is_refused_as_truncated(tmp_path):
    path = _small_archive(tmp_path / "full.tar", "w")
    full = path.read_bytes()
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
        end_blocks = last.offset_data + -(-last.size // 512) * 512  # where the two zero blocks start
    assert full[end_blocks : end_blocks + 1024] == bytes(1024) and len(full) > end_blocks + 1024
    cut = tmp_path / "cut.tar"
    # Cuts inside the content and the end blocks, and cuts inside the padding after them that are not whole
    # blocks. (A cut at a block boundary inside that padding loses nothing: such a file is a complete tar.)
    points = _cut_points(len(full), end_blocks + 1024) + [end_blocks + 1024 + 100, len(full) - 1]
    for point in points:
        cut.write_bytes(full[:point])
        with pytest.raises(HydraMixError, match=rf"^{re.escape(str(cut))}: truncated archive: "):
            list(iter_tar(cut))
    cut.write_bytes(full[: end_blocks + 1024])
    assert len(list(iter_tar(cut))) == 6


def test_read_members_and_folders_say_truncated_even_when_the_cut_leaves_a_split_empty(tmp_path):
    files = {f"ds/{split}/c{i % 2}/{i}.bin": random.Random(i).randbytes(2000) for split in ("train", "test")
             for i in range(4)}  # fmt: skip
    path = tmp_path / "ds.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    early = tmp_path / "early.tar.gz"
    early.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])  # test/ never starts
    with pytest.raises(HydraMixError, match="truncated archive"):
        read_members(early, {"ds/train/c0/0.bin"})  # found early, but the file must still be whole
    from pipeline.data.sources.folder import load_folder_path

    with pytest.raises(HydraMixError, match=rf"{re.escape(str(early))}: truncated archive"):
        load_folder_path(early, 8, progress=False)


def test_damaged_archives_are_corrupt_not_silently_short(tmp_path):
    path = _small_archive(tmp_path / "a.tar", "w")
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tar:
        third = tar.getmembers()[2].offset
    data[third : third + 512] = b"garbage!" * 64  # a header tarfile cannot parse: it would stop there quietly
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    with pytest.raises(HydraMixError, match="corrupt archive: no valid tar header or end-of-archive blocks"):
        list(iter_tar(bad))
    gz = bytearray(gzip.compress(path.read_bytes(), mtime=0))
    gz[-8] ^= 0xFF  # the CRC
    crc = tmp_path / "crc.tar.gz"
    crc.write_bytes(bytes(gz))
    with pytest.raises(HydraMixError, match="corrupt or unreadable archive"):
        list(iter_tar(crc))
    # Concatenated gzip members are one valid stream (as gzip -d reads them).
    raw = path.read_bytes()
    two = tmp_path / "two.tar.gz"
    two.write_bytes(gzip.compress(raw[:5000], mtime=0) + gzip.compress(raw[5000:], mtime=0))
    assert len(list(iter_tar(two))) == 6
