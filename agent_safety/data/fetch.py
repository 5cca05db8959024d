"""Getting the study's published data: an archive of the pinned upstream commit, extracted and verified.

The archive is GitHub's tarball of the pinned commit (downloaded), or a local ``.tar.gz``/``.tar.xz`` with
the same top folder (``--archive``). Only the files the project reads are extracted, through tarfile's
``data`` filter, and each is checked against the sha256 manifest shipped in ``agent_safety/manifests``:
the files are hashed, not the archive, because GitHub does not promise stable archive bytes and the
shared archive is a subset of GitHub's. Extraction goes to a temporary folder inside the cache that is
renamed into place only once verified, so an interrupted or refused fetch never leaves a usable-looking
root behind.
"""

from __future__ import annotations

import hashlib
import http.client
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path, PurePosixPath

from agent_safety.data.toolemu import DataError

COMMIT = "cde0b8f0b898252f3d56e2637cfdda636453be58"
REPO = "bplaut/safety-persists-llm-agents"
DEFAULT_URL = f"https://github.com/{REPO}/archive/{COMMIT}.tar.gz"
TOP_FOLDER = f"safety-persists-llm-agents-{COMMIT}"
CACHE_NAME = f"toolemu-{COMMIT[:7]}"
MANIFEST_NAME = f"{CACHE_NAME}.sha256"
CACHE_ENV = "AGENT_SAFETY_DATA_CACHE"
STAMP = ".verified"
#: What the project reads from upstream (the manifest lists each file; ``build_manifest`` uses these).
NEEDED_PREFIXES = ("data/raw_data_by_eval/",)
NEEDED_FILES = ("assets/all_cases.json", "assets/all_toolkits.json", "LICENSE", "README.md")
DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20


class FetchError(DataError):
    """The study's data could not be fetched, or an archive failed a check; the message names the file."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_relpath(rel: str) -> bool:
    path = PurePosixPath(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts and "\\" not in rel


def parse_manifest(text: str, source: str = MANIFEST_NAME) -> dict[str, str]:
    """``sha256sum``-format lines (``<hash>  <relative path>``) -> {path: hash}."""
    entries: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not _safe_relpath(rel):
            raise FetchError(f"{source}:{n}: not a '<sha256>  <relative path>' line")
        entries[rel] = digest.lower()
    if not entries:
        raise FetchError(f"{source}: empty manifest")
    return entries


def format_manifest(manifest: Mapping[str, str]) -> str:
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(manifest.items()))


def load_manifest() -> dict[str, str]:
    """The manifest of the pinned commit, shipped as package data."""
    text = resources.files("agent_safety.data.manifests").joinpath(MANIFEST_NAME).read_text(encoding="utf-8")
    return parse_manifest(text)


def manifest_digest(manifest: Mapping[str, str]) -> str:
    """Content of the ``.verified`` stamp: a root verified against another manifest is fetched again."""
    return hashlib.sha256(format_manifest(manifest).encode()).hexdigest()


def default_cache_base() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("agent-safety"))


def cached_root(cache_dir: str | Path | None = None) -> Path:
    """Where ``fetch`` puts (or finds) the root: ``<cache base>/toolemu-cde0b8f``."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_base()
    return base / CACHE_NAME


def is_verified(root: Path, stamp: str) -> bool:
    try:
        return (root / STAMP).read_text(encoding="utf-8").strip() == stamp
    except OSError:
        return False


def member_path(name: str, source: str | Path = "archive") -> str | None:
    """A member's path below the archive's top folder (None for the top folder itself).

    Absolute paths and ``..`` components are refused outright: no archive of a git commit has them.
    """
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise FetchError(f"{source}: unsafe member path {name!r} (absolute or with '..'); refused")
    if len(path.parts) < 2:
        return None
    return "/".join(path.parts[1:])


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"hard link to {member.linkname!r}"
    return "directory" if member.isdir() else "special file"


def _open_archive(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r|*")  # one streaming pass: no seeking back in the xz stream
    except FileNotFoundError:
        raise FetchError(f"{archive}: no such archive") from None
    except (tarfile.TarError, OSError) as e:
        raise FetchError(f"{archive}: not a readable .tar.gz/.tar.xz archive ({e})") from None


def extract_needed(archive: Path, dest: Path, needed: Mapping[str, str], progress: bool = True) -> set[str]:
    """Extract the members named in ``needed`` (paths below the top folder) into ``dest``; return them.

    Each is extracted with tarfile's ``data`` filter; a needed path that is a link, a duplicate member,
    or any member with an absolute path or ``..`` refuses the whole archive.
    """
    from tqdm import tqdm

    found: set[str] = set()
    with _open_archive(archive) as tf, tqdm(total=len(needed), desc="extracting", unit="file",
                                             disable=not progress) as bar:
        try:
            for member in tf:
                rel = member_path(member.name, archive)
                if rel is None or rel not in needed:
                    continue
                if not member.isfile():
                    raise FetchError(f"{archive}: {member.name} is a {_kind(member)}, not a regular file; refused")
                if rel in found:
                    raise FetchError(f"{archive}: {member.name} appears twice; refused")
                tf.extract(member.replace(name=rel, deep=False), dest, filter="data")
                found.add(rel)
                bar.update()
        except tarfile.FilterError as e:
            raise FetchError(f"{archive}: refused by tarfile's data filter ({e})") from None
        except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as e:
            raise FetchError(f"{archive}: corrupt or truncated archive ({e})") from None
    return found


def verify_tree(root: Path, manifest: Mapping[str, str], source: str) -> None:
    """Every file of the manifest is under ``root`` with its recorded sha256, or FetchError naming it."""
    missing = sorted(rel for rel in manifest if not (root / rel).is_file())
    if missing:
        more = f" (and {len(missing) - 1} more of the manifest's files)" if len(missing) > 1 else ""
        raise FetchError(f"{source}: {missing[0]} is missing{more}; not an archive of {REPO}@{COMMIT[:7]}")
    for rel, digest in sorted(manifest.items()):
        if sha256_file(root / rel) != digest:
            raise FetchError(f"{source}: {rel} does not match its sha256 in {MANIFEST_NAME} "
                             f"(tampered, or not {REPO}@{COMMIT[:7]}); refused")


def download(url: str, dest: Path, progress: bool = True) -> None:
    """Stream ``url`` to ``dest`` with a progress bar; FetchError with a one-line reason on failure."""
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, dest.open("wb") as out:
            length = resp.headers.get("Content-Length")
            with tqdm(total=int(length) if length else None, desc="downloading", unit="B", unit_scale=True,
                      unit_divisor=1024, disable=not progress) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise FetchError(f"could not download {url} ({e}); download it elsewhere and pass "
                         "`agent-safety data fetch --archive PATH`") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise FetchError(f"could not download {url} ({reason}); without network, download it elsewhere and "
                         "pass `agent-safety data fetch --archive PATH`") from None


def fetch(cache_dir: str | Path | None = None, archive: str | Path | None = None, url: str | None = None,
          progress: bool = True, manifest: Mapping[str, str] | None = None) -> Path:
    """Return the root of the study's data (upstream's layout), fetching and verifying it on first use.

    ``cache_dir`` is the cache base (default: ``$AGENT_SAFETY_DATA_CACHE`` or the user's cache dir); the
    root is ``<base>/toolemu-cde0b8f``. ``archive`` takes a local tarball instead of downloading ``url``
    (default: GitHub's archive of the pinned commit). ``manifest`` ({path: sha256}) replaces the
    shipped one, for tests.
    """
    if archive is not None and url is not None:
        raise ValueError("pass an archive or a URL, not both")
    manifest = dict(manifest) if manifest is not None else load_manifest()
    stamp = manifest_digest(manifest)
    root = cached_root(cache_dir)
    if is_verified(root, stamp):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}-", dir=root.parent))
    try:
        if archive is None:
            source = url or DEFAULT_URL
            archive = work / "archive.tar"
            download(source, archive, progress)
        else:
            archive = Path(archive).expanduser()
            source = str(archive)
        staged = work / "root"
        staged.mkdir()
        extract_needed(Path(archive), staged, manifest, progress)
        verify_tree(staged, manifest, source)
        (staged / STAMP).write_text(stamp + "\n", encoding="utf-8")
        if root.exists() or root.is_symlink():
            if is_verified(root, stamp):  # a concurrent fetch finished first
                return root
            os.replace(root, work / "stale")  # an unverified or outdated root
        try:
            os.replace(staged, root)
        except OSError:
            if not is_verified(root, stamp):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root


def build_manifest(archive: str | Path) -> dict[str, str]:
    """{path: sha256} of the files the project needs in ``archive``: how the shipped manifest was made."""
    out: dict[str, str] = {}
    with _open_archive(Path(archive)) as tf:
        for member in tf:
            rel = member_path(member.name, archive)
            if rel is None or not member.isfile():
                continue
            if rel in NEEDED_FILES or rel.startswith(NEEDED_PREFIXES):
                f = tf.extractfile(member)
                assert f is not None
                digest = hashlib.sha256()
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                out[rel] = digest.hexdigest()
    return out
