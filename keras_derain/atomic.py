"""Write-then-move: a half-written output never replaces a good one."""

import contextlib
import os
import shutil
import uuid
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name keeps the suffix (Keras insists on ``.keras``). Works for
    files and folders (a SavedModel): an existing folder is moved aside, replaced,
    then deleted. On an exception the temporary output is removed and ``path`` is
    left as it was.

    Example:
        >>> from keras_derain.atomic import atomic_output
        >>> with atomic_output("/tmp/best.keras") as temporary:  # doctest: +SKIP
        ...     generator.save(temporary)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
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
