"""``agent-safety data fetch``: extraction of only the needed files, sha256 verification, caching, refusals.

The positive path uses the study's shared archive (skipped when absent); the refusals use tiny archives
built here with their own manifest, so each takes milliseconds. Nothing touches the network: the download
failure is a closed port on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from conftest import shared_archive

from agent_safety.cli import main
from agent_safety.data import fetch as fetch_mod
from agent_safety.data.fetch import (
    CACHE_NAME,
    STAMP,
    TOP_FOLDER,
    FetchError,
    build_manifest,
    fetch,
    load_manifest,
    manifest_digest,
    parse_manifest,
)

CLOSED_PORT_URL = "http://127.0.0.1:9/archive.tar.gz"
FILES = {
    "LICENSE": b"MIT License\n",
    "README.md": b"# upstream\n",
    "assets/all_cases.json": b"[]\n",
    "assets/all_toolkits.json": b"[]\n",
    "data/raw_data_by_eval/gpt5m/agent/run.jsonl": b'{"case_idx": 0}\n',
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


MANIFEST = {rel: sha(data) for rel, data in FILES.items()}


def make_archive(path: Path, files: Mapping[str, bytes], extra: tuple[tarfile.TarInfo, ...] = (),
                 top: str = TOP_FOLDER) -> Path:
    """A .tar.gz laid out like GitHub's archive: everything under one top folder."""
    with tarfile.open(path, "w:gz") as tf:
        d = tarfile.TarInfo(top)
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for rel, data in files.items():
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info


def assert_nothing_left(cache: Path) -> None:
    """A refused or failed fetch leaves neither a root nor a temporary folder in the cache."""
    assert not cache.exists() or list(cache.iterdir()) == []


def test_shared_archive_is_verified_and_cached(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               request: pytest.FixtureRequest) -> None:
    archive = shared_archive("upstream-data.tar.xz")
    manifest = load_manifest()
    root = fetch(cache_dir=tmp_path, archive=archive, progress=False)
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))  # 192 MB pytest would keep
    assert root == tmp_path / CACHE_NAME
    assert len(manifest) == 1624
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != STAMP) \
        == sorted(manifest)
    assert (root / STAMP).read_text().strip() == manifest_digest(manifest)
    assert [p.name for p in tmp_path.iterdir()] == [CACHE_NAME]  # no temporary folder left behind

    t = time.perf_counter()  # a cache hit: returns at once, without reading any archive
    assert fetch(cache_dir=tmp_path, archive=tmp_path / "absent.tar.xz", progress=False) == root
    assert time.perf_counter() - t < 0.5

    assert main(["data", "fetch", "--archive", str(archive), "--cache-dir", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(root)


def test_tiny_archive_extracts_only_the_manifest(tmp_path: Path) -> None:
    extra = (member(f"{TOP_FOLDER}/src/other.py", size=3),
             member(f"{TOP_FOLDER}/docs/link", tarfile.SYMTYPE, "/etc/passwd"))
    archive = make_archive(tmp_path / "a.tar.gz", FILES, extra)
    root = fetch(cache_dir=tmp_path / "cache", archive=archive, progress=False, manifest=MANIFEST)
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == {*FILES, STAMP}
    assert (root / "assets" / "all_cases.json").read_bytes() == FILES["assets/all_cases.json"]
    assert build_manifest(archive) == MANIFEST  # how the shipped manifest was made


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "a.tar.gz", {**FILES, "assets/all_cases.json": b'[{"evil": 1}]\n'})
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"assets/all_cases\.json does not match its sha256") as e:
        fetch(cache_dir=cache, archive=archive, progress=False, manifest=MANIFEST)
    assert "\n" not in str(e.value)
    assert_nothing_left(cache)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "a.tar.gz", {k: v for k, v in FILES.items() if k != "LICENSE"})
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"LICENSE is missing"):
        fetch(cache_dir=cache, archive=archive, progress=False, manifest=MANIFEST)
    assert_nothing_left(cache)


@pytest.mark.parametrize("name", [f"{TOP_FOLDER}/../../evil.txt", "/tmp/evil-agent-safety.txt",
                                  f"{TOP_FOLDER}/assets/../../../evil.txt"])
def test_path_traversal_is_refused(tmp_path: Path, name: str) -> None:
    archive = make_archive(tmp_path / "a.tar.gz", FILES, (member(name, size=1),))
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(FetchError, match=r"unsafe member path"):
        fetch(cache_dir=cache, archive=archive, progress=False, manifest=MANIFEST)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert_nothing_left(cache)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_link_to_a_needed_file_is_refused(tmp_path: Path, kind: bytes) -> None:
    files = {k: v for k, v in FILES.items() if k != "assets/all_cases.json"}
    link = member(f"{TOP_FOLDER}/assets/all_cases.json", kind, "/etc/passwd")
    archive = make_archive(tmp_path / "a.tar.gz", files, (link,))
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"assets/all_cases\.json is a (symbolic|hard) link"):
        fetch(cache_dir=cache, archive=archive, progress=False, manifest=MANIFEST)
    assert_nothing_left(cache)


def test_duplicate_member_is_refused(tmp_path: Path) -> None:
    """A later duplicate would silently overwrite a file that was already extracted."""
    archive = make_archive(tmp_path / "a.tar.gz", FILES, (member(f"{TOP_FOLDER}/LICENSE", size=4),))
    with pytest.raises(FetchError, match=r"LICENSE appears twice"):
        fetch(cache_dir=tmp_path / "cache", archive=archive, progress=False, manifest=MANIFEST)


def test_unreadable_and_truncated_archives(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    with pytest.raises(FetchError, match=r"junk\.tar\.gz: not a readable"):
        fetch(cache_dir=tmp_path / "cache", archive=junk, progress=False, manifest=MANIFEST)
    good = make_archive(tmp_path / "a.tar.gz", {**FILES, "big.bin": os.urandom(50_000)})
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[:30_000])
    with pytest.raises(FetchError, match=r"cut\.tar\.gz: (corrupt or truncated|.* is missing)"):
        fetch(cache_dir=tmp_path / "cache", archive=cut, progress=False, manifest=MANIFEST)
    with pytest.raises(FetchError, match=r"no such archive"):
        fetch(cache_dir=tmp_path / "cache", archive=tmp_path / "absent.tar.xz", progress=False, manifest=MANIFEST)
    assert_nothing_left(tmp_path / "cache")


def test_unverified_root_is_replaced(tmp_path: Path) -> None:
    """A root without a matching stamp (older manifest, hand-made) is fetched again, atomically."""
    cache = tmp_path / "cache"
    stale = cache / CACHE_NAME
    stale.mkdir(parents=True)
    (stale / "junk").write_text("left over")
    archive = make_archive(tmp_path / "a.tar.gz", FILES)
    root = fetch(cache_dir=cache, archive=archive, progress=False, manifest=MANIFEST)
    assert root == stale and not (root / "junk").exists() and (root / "LICENSE").exists()
    other = {**MANIFEST, "LICENSE": sha(b"other")}
    with pytest.raises(FetchError, match="LICENSE does not match"):
        fetch(cache_dir=cache, archive=archive, progress=False, manifest=other)
    assert (root / STAMP).read_text().strip() == manifest_digest(MANIFEST)  # the verified root is untouched
    assert sorted(p.name for p in cache.iterdir()) == [CACHE_NAME]


def test_env_sets_the_cache_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_SAFETY_DATA_CACHE", str(tmp_path / "env-cache"))
    archive = make_archive(tmp_path / "a.tar.gz", FILES)
    assert fetch(archive=archive, progress=False, manifest=MANIFEST) == tmp_path / "env-cache" / CACHE_NAME
    assert fetch(cache_dir=tmp_path / "arg", archive=archive, progress=False, manifest=MANIFEST) \
        == tmp_path / "arg" / CACHE_NAME


def test_network_failure_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"could not download http://127\.0\.0\.1:9/archive\.tar\.gz .*--archive"):
        fetch(cache_dir=cache, url=CLOSED_PORT_URL, progress=False, manifest=MANIFEST)
    assert_nothing_left(cache)
    assert main(["data", "fetch", "--url", CLOSED_PORT_URL, "--cache-dir", str(cache), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and CLOSED_PORT_URL in err and "--archive" in err


def test_unset_data_root_fetches_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """With data.root unset a run fetches the data; offline that is the clear download error."""
    monkeypatch.setattr(fetch_mod, "DEFAULT_URL", CLOSED_PORT_URL)
    monkeypatch.setenv("AGENT_SAFETY_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AGENT_SAFETY_TOOLEMU_ROOT", raising=False)
    assert main(["data", "stats", "data=toolemu_gpt5m", f"paths.cache_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert f"could not download {CLOSED_PORT_URL}" in err and "--archive" in err


def test_archive_and_url_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        fetch(cache_dir=tmp_path, archive=tmp_path / "a.tar.gz", url=CLOSED_PORT_URL)


def test_manifest_lines_are_checked() -> None:
    assert parse_manifest(f"{'a' * 64}  data/x.jsonl\n\n") == {"data/x.jsonl": "a" * 64}
    for bad in (f"{'a' * 64} data/x.jsonl", f"{'a' * 63}  x", f"{'a' * 64}  ../x", f"{'a' * 64}  /etc/x", ""):
        with pytest.raises(FetchError):
            parse_manifest(bad)
