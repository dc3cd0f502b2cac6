"""Write-then-move: a half-written output never replaces a good one."""

import contextlib
import errno
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

# ".NAME.tmp-PID-TAG.SUFFIX" and ".NAME.old-PID-TAG": the writer's process id tells a stale one.
_TEMPORARY = re.compile(r"^\..+\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}(?:\..*)?$")


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name keeps the suffix (Keras insists on ``.keras``) and holds
    the writer's process id, so `remove_stale_temporaries` can tell one left by
    a killed process. Works for files and folders (a SavedModel): an existing
    folder is moved aside, replaced, then deleted. On an exception the
    temporary output is removed and ``path`` is left as it was.

    Example:
        >>> from keras_derain.atomic import atomic_output
        >>> with atomic_output("/tmp/best.keras") as temporary:  # doctest: +SKIP
        ...     generator.save(temporary)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary = path.with_name(f".{path.stem}.tmp-{tag}{path.suffix}")
    try:
        yield temporary
        if temporary.is_dir():
            if path.exists():
                old = path.with_name(f".{path.name}.old-{tag}")
                os.replace(path, old)
                os.replace(temporary, path)
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            else:
                os.replace(temporary, path)
        elif temporary.exists():
            os.replace(temporary, path)
        else:
            raise FileNotFoundError(f"{temporary}: nothing was written")
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        elif temporary.exists():
            temporary.unlink()


def remove_stale_temporaries(folder):
    """Delete the `atomic_output` temporaries in ``folder`` whose process is gone (killed mid-write).

    A process on another machine sharing the folder looks gone too; its write
    then fails and says so, and no finished output is touched. Returns the
    removed paths.
    """
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and not _running(int(match.group("pid"))):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_writable(folder):
    """OSError unless files can be written in ``folder``, or it can be created; creates nothing.

    Run before any work, so an unwritable output folder is found at once, not
    after every photo has been processed. An existing folder is tested by
    writing and deleting a file in it (permissions, read-only disks, quotas
    on creation); a missing one by its nearest existing parent.
    """
    folder = existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(existing))
    if existing == folder:
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".keras-derain-check-"):
                pass
        except OSError as error:  # about the folder, not the probe's hidden name
            raise type(error)(error.errno, error.strerror, str(folder)) from None
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot create a folder in it", str(existing))
