"""fsspec helpers: open any data-root URL, write files atomically, read Parquet verified.

Local paths are written to a temporary name in the same folder and renamed, so a crash never
leaves a half-written file. Object stores (s3://...) make a PUT visible only once it is
complete, so a single put is already atomic there. A file too large for memory (a download)
is written in chunks to a :func:`staged_file` and published by its ``commit``.

**Temporary names.** Every temporary file or folder the project makes is named
``.<target>.tmp-<host>-<pid>-<random>`` (:func:`temp_prefix`): the name it will replace, and
the host and process that write it. A process killed mid-write (kill -9, power loss) leaves
its temporary behind; the next write into the same folder sweeps it away, so the next run
of the same step removes what the killed one left (:func:`remove_stale_temps`). A temporary
is *stale*, and removed, only when its writer is certainly gone: on this host, no process
with that pid is running, or the one running started after the temporary was last written
(the pid was reused). A temporary named by another host, or by an older version without an
owner in its name, is stale once it is :data:`STALE_TEMP_AGE_S` old. So a sweep never
deletes the temporary of a step that is still running, in this process or another one (two
steps may share a folder, such as the download cache). Each folder is swept once per
process, on its first write, so that a cache folder of many thousand files is listed once
per run rather than once per file.

**Parquet.** Every file :func:`atomic_write_parquet` writes carries a CRC-32 checksum per
page, and the readers here (:func:`read_parquet`, :func:`iter_parquet_batches`,
:func:`parquet_schema`, :func:`parquet_dataset` with :func:`read_dataset`) verify them, so a
flipped bit raises a :class:`~astroclip_core.errors.FormatError` naming the file instead of
being read as data.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from astroclip_core.errors import FormatError
from astroclip_core.processes import host_id, is_dead

log = logging.getLogger(__name__)

TEMP_MARK = ".tmp-"
# A temporary whose writer cannot be checked (another host, or no owner in its name) is
# removed once it is this old: no single write or dataset build of this project takes a day.
STALE_TEMP_AGE_S = 24 * 3600.0
_OWNED_TEMP = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<host>[A-Za-z0-9.]*)-(?P<pid>\d+)-[a-z0-9_]+$")
# Names of earlier versions: ".<name>.<random>.tmp" files, ".<name>.tmp-<random>" and
# ".<name>.old-<uuid>" folders of the dataset build.
_UNOWNED_TEMP = re.compile(r"^\..+(\.[a-z0-9_]{8}\.tmp|\.tmp-[a-z0-9_]{8}|\.old-[0-9a-f]{32})$")
_swept_folders: set[str] = set()
_swept_lock = threading.Lock()


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path-within-it) for a local path or fsspec URL."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def is_local(url: str) -> bool:
    """True for plain paths and file:// URLs."""
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> Path:
    return Path(url[len("file://") :] if url.startswith("file://") else url)


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` so that readers see either the old file or the whole new one."""
    if is_local(url):
        path = _local_path(url)
        fd, tmp = make_temp_file(path)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; published files are world-readable
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    fs, path = filesystem(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def atomic_write_parquet(url: str, table: pa.Table, **kwargs: object) -> int:
    """Write ``table`` as one Parquet file at ``url`` atomically; return its size in bytes.

    ``kwargs`` go to ``pyarrow.parquet.write_table``; every page gets a CRC-32 checksum.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True, **kwargs)
    data = sink.getvalue().to_pybytes()
    atomic_write_bytes(url, data)
    return len(data)


def read_bytes(url: str) -> bytes:
    """Read a whole file from a local path or fsspec URL."""
    fs, path = filesystem(url)
    return fs.cat_file(path)


def remove_file(url: str) -> None:
    """Delete the file at ``url``; nothing happens when there is none."""
    fs, path = filesystem(url)
    with suppress(FileNotFoundError):
        fs.rm_file(path)


def exists(url: str) -> bool:
    """True when ``url`` names an existing file or folder."""
    fs, path = filesystem(url)
    return fs.exists(path)


@contextmanager
def local_copy(url: str) -> Iterator[Path]:
    """Yield a local path holding ``url``'s bytes: the file itself when local, else a temp copy.

    fitsio needs a real file; remote (s3://) cache entries are copied to a temporary file that
    is removed on exit.
    """
    if is_local(url):
        yield _local_path(url)
        return
    fs, path = filesystem(url)
    suffix = Path(path).suffix
    with scratch_dir("copy") as tmp:
        local = tmp / f"copy{suffix}"
        fs.get_file(path, str(local))
        yield local


class StagedFile:
    """A temporary local file that replaces ``url`` on :meth:`commit` (see :func:`staged_file`).

    ``fh`` is open ``w+b``; ``path`` is where it lies, for readers (validators) of what was
    written so far (flush ``fh`` first).
    """

    def __init__(self, url: str, path: Path, fh: BinaryIO) -> None:
        self.url, self.path, self.fh = url, path, fh
        self.committed = False

    def commit(self) -> None:
        """Close the file and put it at ``url``: renamed into place, or uploaded when remote."""
        self.fh.close()
        if is_local(self.url):
            os.chmod(self.path, 0o644)  # mkstemp creates 0600; published files are world-readable
            os.replace(self.path, _local_path(self.url))
        else:
            fs, path = filesystem(self.url)
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(self.path), path)  # s3fs uploads it in parts, from the file
        self.committed = True


@contextmanager
def staged_file(url: str) -> Iterator[StagedFile]:
    """A temporary file to write ``url``'s new content into, in chunks; commit to publish it.

    For a local ``url`` the temporary lies beside it under a :func:`temp_prefix` name (so the
    next run sweeps it away if this process is killed) and commit renames it into place:
    readers see the old file or the whole new one, never a half-written one. For a remote
    ``url`` (s3://) it lies in a :func:`scratch_dir` and commit uploads it with ``put_file``
    (an object-store PUT becomes visible only once complete). Left uncommitted, for any
    reason, the temporary and any folder made for it are removed on exit, and ``url`` is
    untouched.
    """
    created: list[Path] = []  # folders this call makes for the target, deepest first
    with ExitStack() as stack:
        if is_local(url):
            folder = _local_path(url).parent
            while not folder.exists():
                created.append(folder)
                folder = folder.parent
            fd, tmp = make_temp_file(_local_path(url))
            path = Path(tmp)
        else:
            path = stack.enter_context(scratch_dir("staged")) / "staged"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        staged = StagedFile(url, path, os.fdopen(fd, "w+b"))
        try:
            yield staged
        finally:
            staged.fh.close()
            if not staged.committed:
                path.unlink(missing_ok=True)
                # A failed download leaves no empty cache folders; one another writer has
                # filled meanwhile is not empty and stays.
                for made in created:
                    with suppress(OSError):
                        made.rmdir()


# Temporary names: made here, swept by the next run (see the module docstring).


def temp_prefix(target_name: str) -> str:
    """This process's temporary-name prefix for ``target_name``: ``.<name>.tmp-<host>-<pid>-``."""
    return f".{target_name}{TEMP_MARK}{host_id()}-{os.getpid()}-"


def make_temp_file(target: Path) -> tuple[int, str]:
    """Create the temporary file that will replace ``target``, beside it; ``(fd, path)``.

    Sweeps the folder's stale temporaries first (once per process).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(target.parent)
    return tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target.name))


def make_temp_dir(target: Path) -> Path:
    """Create the temporary folder that will replace the folder ``target``, beside it.

    Sweeps the parent's stale temporaries first (once per process).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(target.parent)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=temp_prefix(target.name)))


def temp_name(target: Path) -> Path:
    """A fresh temporary name beside ``target`` (nothing is created), e.g. to rename it away."""
    return target.parent / f"{temp_prefix(target.name)}{os.urandom(4).hex()}"


@contextmanager
def scratch_dir(label: str) -> Iterator[Path]:
    """A private folder in the system temp folder, removed on exit (or by a later run if killed)."""
    root = Path(tempfile.gettempdir())
    _sweep_once(root, target_prefix="astroclip-")
    path = Path(tempfile.mkdtemp(dir=root, prefix=temp_prefix(f"astroclip-{label}")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_temps(folder: str | Path, target_prefix: str = "") -> list[Path]:
    """Delete the stale temporaries directly in ``folder``; return what was deleted.

    Only names of the form :func:`temp_prefix` makes (or of earlier versions) whose target
    starts with ``target_prefix`` are considered; what is stale is defined in the module
    docstring. Other files are never touched.
    """
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(f".{target_prefix}") or not _is_stale(entry, now):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        log.warning("removed %s, left behind by an interrupted write", entry.path)
        removed.append(Path(entry.path))
    return removed


def _sweep_once(folder: Path, target_prefix: str = "") -> None:
    key = os.path.abspath(folder)
    if key in _swept_folders:
        return
    remove_stale_temps(folder, target_prefix)
    with _swept_lock:
        _swept_folders.add(key)


def _is_stale(entry: os.DirEntry, now: float) -> bool:
    owned = _OWNED_TEMP.match(entry.name)
    if owned is None and _UNOWNED_TEMP.match(entry.name) is None:
        return False
    try:
        modified = entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:  # its writer renamed or removed it meanwhile
        return False
    dead = None if owned is None else is_dead(owned["host"], int(owned["pid"]), modified)
    if dead is None:  # another host's, or an old-format name: judged by age alone
        return now - modified > STALE_TEMP_AGE_S
    return dead


# Parquet reading with page checksums verified.

# What Arrow raises for a file it cannot read (FormatError names the file instead).
PARQUET_ERRORS = (OSError, pa.ArrowInvalid)


def parquet_problem(err: Exception) -> str:
    """The FormatError message for an Arrow error reading a Parquet file."""
    return f"cannot read Parquet: {err}"


@contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A ``ParquetFile`` of one file (local path or fsspec URL) that verifies page checksums.

    A local file is memory-mapped and unmapped on exit. FormatError names ``path`` when it is
    not readable Parquet; a missing file raises FileNotFoundError.
    """
    # A local file is read by Arrow itself, memory-mapped: through a Python file object every
    # read costs a Python call and a copy. Page checksums are verified.
    fs, local = filesystem(path)
    handle = None
    try:
        if is_local(path):
            parquet = pq.ParquetFile(local, memory_map=True, page_checksum_verification=True)
        else:
            handle = fs.open(local, "rb")
            parquet = pq.ParquetFile(handle, page_checksum_verification=True)
    except FileNotFoundError:
        raise
    except PARQUET_ERRORS as err:
        if handle is not None:
            handle.close()
        raise FormatError(path, parquet_problem(err)) from err
    try:
        yield parquet
    finally:
        parquet.close()  # unmaps the file: mapped pages would count in the reader's RSS
        if handle is not None:
            handle.close()


def read_parquet(
    url: str, columns: Sequence[str] | None = None, filters: list | None = None
) -> pa.Table:
    """One Parquet file (local path or fsspec URL) with every page checksum verified.

    ``filters`` as in ``pyarrow.parquet.read_table``. A damaged or unreadable file raises
    FormatError naming ``url``; a missing one FileNotFoundError.
    """
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as fh:
            return pq.read_table(
                fh,
                columns=list(columns) if columns is not None else None,
                filters=filters,
                page_checksum_verification=True,
            )
    except FileNotFoundError:
        raise
    except PARQUET_ERRORS as err:
        raise FormatError(url, parquet_problem(err)) from err


def parquet_schema(url: str) -> pa.Schema:
    """The Arrow schema of one Parquet file (reads only its footer); FormatError if unreadable."""
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as fh:
            return pq.read_schema(fh)
    except FileNotFoundError:
        raise
    except PARQUET_ERRORS as err:
        raise FormatError(url, parquet_problem(err)) from err


def iter_parquet_batches(
    url: str, batch_rows: int, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``batch_rows`` rows of one Parquet file, checksums verified."""
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as fh:
            parquet = pq.ParquetFile(fh, page_checksum_verification=True)
            cols = list(columns) if columns is not None else None
            yield from parquet.iter_batches(batch_size=batch_rows, columns=cols)
    except FileNotFoundError:
        raise
    except PARQUET_ERRORS as err:
        raise FormatError(url, parquet_problem(err)) from err


def parquet_dataset(url: str, partitioning: str | None = None) -> pads.Dataset:
    """A ``pyarrow.dataset`` over a Parquet file or folder whose scans verify page checksums.

    Read it with :func:`read_dataset`, which names the damaged file when a scan fails.
    """
    fs, path = filesystem(url)
    scan = pads.ParquetFragmentScanOptions(page_checksum_verification=True)
    fmt = pads.ParquetFileFormat(default_fragment_scan_options=scan)
    return pads.dataset(path, filesystem=fs, format=fmt, partitioning=partitioning)


def read_dataset(
    dataset: pads.Dataset, columns: Sequence[str] | None = None, filter: object | None = None
) -> pa.Table:
    """``dataset.to_table(columns, filter)``; a failed scan raises FormatError naming the file."""
    cols = list(columns) if columns is not None else None
    try:
        return dataset.to_table(columns=cols, filter=filter)
    except FileNotFoundError:
        raise
    except PARQUET_ERRORS as err:
        raise FormatError(_failing_file(dataset, cols, filter), parquet_problem(err)) from err


def _failing_file(dataset: pads.Dataset, columns: list[str] | None, filter: object) -> str:
    """The first file of ``dataset`` that fails to scan on its own (Arrow's errors omit it)."""
    for fragment in dataset.get_fragments():
        try:
            fragment.to_table(columns=columns, filter=filter, schema=dataset.schema)
        except PARQUET_ERRORS:
            return getattr(fragment, "path", "<dataset>")
    files = getattr(dataset, "files", None) or ["<dataset>"]
    return f"{files[0]} (or another file of its dataset)"
