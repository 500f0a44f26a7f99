"""Source revisions: stable while the contents are, changed when they change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arcflow.data.sources.revision import source_revision
from arcflow.errors import SourceError


def test_a_local_folder_changes_revision_with_its_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.jpg").write_bytes(b"x" * 10)
    first = source_revision(str(tmp_path))
    assert source_revision(str(tmp_path)) == first and len(first) == 16
    (tmp_path / "a" / "2.jpg").write_bytes(b"y")
    added = source_revision(str(tmp_path))
    assert added != first
    os.utime(tmp_path / "a" / "2.jpg", ns=(1, 1))
    assert source_revision(str(tmp_path)) != added  # rewritten in place: new mtime
    assert source_revision(f"file://{tmp_path}") == source_revision(str(tmp_path))


def test_a_local_file_and_hidden_files(tmp_path: Path) -> None:
    archive = tmp_path / "faces.zip"
    archive.write_bytes(b"zip")
    before = source_revision(str(tmp_path))
    (tmp_path / ".DS_Store").write_bytes(b"noise")
    assert source_revision(str(tmp_path)) == before  # hidden files do not count
    single = source_revision(str(archive))
    archive.write_bytes(b"zip2")
    assert source_revision(str(archive)) != single


def test_synthetic_sources_depend_on_their_options() -> None:
    a = source_revision("synthetic://synthface", options={"seed": 0})
    assert a == source_revision("synthetic://synthface", options={"seed": 0})
    assert a != source_revision("synthetic://synthface", options={"seed": 1})


def test_a_missing_path_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="local source not found"):
        source_revision(str(tmp_path / "nope"))


def test_an_http_source_revision_comes_from_a_head_request(tmp_path: Path) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/faces.zip"
        (tmp_path / "faces.zip").write_bytes(b"v1")
        os.utime(tmp_path / "faces.zip", (1_700_000_000, 1_700_000_000))
        first = source_revision(url)
        assert source_revision(url) == first
        (tmp_path / "faces.zip").write_bytes(b"v2 longer")  # Last-Modified and length move
        assert source_revision(url) != first
        with pytest.raises(SourceError, match="HEAD failed"):
            source_revision(f"http://127.0.0.1:{server.server_port}/missing.zip")
    finally:
        server.shutdown()
        server.server_close()
