"""Write the outputs of one command as a set: all of them, or none.

``redline rules`` and ``redline dashboards`` each write several files that only make sense
together (a rule file and its promtool test, two dashboards linking to each other). A full
disk or a read-only folder half-way must leave the old set, so :func:`write_set` works in
three steps:

1. stage every new text in a temporary sibling of its destination (``.name.XXXX.tmp``);
   a failure here deletes every staged file and changes nothing;
2. hard-link each existing destination to a backup, then ``os.replace`` the staged files
   over the destinations; a failure here puts every replaced file back from its backup
   and deletes the files that did not exist before;
3. delete the backups and the files the set no longer contains.

No temporary file survives any of the error paths.

Example::

    changed = write_set({Path("alerts/a.yml"): "...", Path("alerts/b.yml"): "..."})
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["write_set", "read_text_or_none"]


def read_text_or_none(path: Path) -> str | None:
    """The UTF-8 text at ``path``; ``None`` when it is missing or not UTF-8 text.

    Raises:
        OSError: it exists but cannot be read (a directory, no permission).
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return None


def _stage(dest: Path, text: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
        os.chmod(tmp, 0o644)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_set(files: Mapping[Path, str], remove: Iterable[Path] = ()) -> list[Path]:
    """Write every changed file of ``files`` and delete ``remove``, all or none.

    Returns:
        The destinations whose content changed, sorted.

    Raises:
        OSError: staging or replacing failed; the files on disk are as before.
    """
    staged: list[tuple[Path, Path]] = []
    backups: dict[Path, Path] = {}
    done: list[Path] = []
    try:
        for dest, text in sorted(files.items()):
            if dest.is_dir():
                raise IsADirectoryError(21, "is a directory, expected a file", str(dest))
            if read_text_or_none(dest) == text:
                continue
            staged.append((_stage(dest, text), dest))
        for tmp, dest in staged:
            if dest.exists():
                backup = tmp.with_name(tmp.name + ".old")
                os.link(dest, backup)
                backups[dest] = backup
        for tmp, dest in staged:
            os.replace(tmp, dest)
            done.append(dest)
    except BaseException:
        for dest in reversed(done):
            if dest in backups:
                os.replace(backups.pop(dest), dest)
            else:
                dest.unlink(missing_ok=True)
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for backup in backups.values():
            backup.unlink(missing_ok=True)
        raise
    for backup in backups.values():
        backup.unlink(missing_ok=True)
    for path in remove:
        path.unlink(missing_ok=True)
    return sorted(dest for _, dest in staged)
