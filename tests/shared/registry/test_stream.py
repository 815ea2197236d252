"""The checkpoint tar stream: deterministic, readable from any offset, extracted safely."""

from __future__ import annotations

import io
import tarfile

import pytest

from fedehr.shared.registry.stream import StreamError, TarStream, extract


def test_the_stream_is_a_tar_of_the_checkpoint_files(checkpoint, tmp_path):
    data = b"".join(TarStream(checkpoint).iter_bytes())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert names == sorted(p.name for p in checkpoint.iterdir() if not p.name.startswith("."))
        for name in names:
            assert tar.extractfile(name).read() == (checkpoint / name).read_bytes()
    assert len(data) == TarStream(checkpoint).size


def test_the_stream_is_the_same_bytes_every_time(checkpoint):
    first = b"".join(TarStream(checkpoint).iter_bytes(chunk=777))
    (checkpoint / "vocab.json").touch()  # a new mtime changes nothing in the stream
    assert b"".join(TarStream(checkpoint).iter_bytes(chunk=4096)) == first
    assert TarStream(checkpoint).sha256() == TarStream(checkpoint).sha256()


@pytest.mark.parametrize("offset", [0, 1, 511, 512, 513, 5000, -1024, -1])
def test_reading_from_an_offset_gives_the_rest_of_the_stream(checkpoint, offset):
    stream = TarStream(checkpoint)
    whole = b"".join(stream.iter_bytes())
    start = offset % stream.size
    assert b"".join(stream.iter_bytes(start, chunk=1000)) == whole[start:]


def test_an_offset_past_the_end_is_refused(checkpoint):
    stream = TarStream(checkpoint)
    with pytest.raises(StreamError, match="outside the stream"):
        list(stream.iter_bytes(stream.size + 1))


def test_extract_round_trips_the_stream(checkpoint, tmp_path):
    archive = tmp_path / "s.tar"
    archive.write_bytes(b"".join(TarStream(checkpoint).iter_bytes()))
    (tmp_path / "out").mkdir()
    names = extract(archive, tmp_path / "out")
    shown = sorted(p.name for p in checkpoint.iterdir() if not p.name.startswith("."))
    assert sorted(names) == shown
    for name in names:
        assert (tmp_path / "out" / name).read_bytes() == (checkpoint / name).read_bytes()


@pytest.mark.parametrize("kind", ["traversal", "symlink", "folder", "not-allowed"])
def test_extract_refuses_what_a_checkpoint_never_holds(tmp_path, kind):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo({"traversal": "../escape", "symlink": "model.safetensors",
                                "folder": "sub", "not-allowed": "run.sh"}[kind])
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "folder":
            info.type = tarfile.DIRTYPE
        else:
            info.size = 2
        tar.addfile(info, io.BytesIO(b"hi") if info.isreg() else None)
    (tmp_path / "out").mkdir()
    with pytest.raises(StreamError, match="unexpected entry"):
        extract(archive, tmp_path / "out", allowed=("model.safetensors",))
    assert not (tmp_path / "escape").exists()
