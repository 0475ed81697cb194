"""The one way this project writes a file: a temporary file beside the target, fsync, rename.

A process killed at any point leaves either the old file or the complete new one, never a torn
file; ``overwrite=False`` (the default) refuses to replace anything that already exists, so nothing
a user made is lost. Every writer in the project (safetensors exports, conversions, checkpoints'
small files, videos, images, manifests) goes through :func:`atomic_path` or one of the helpers
built on it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import VDOTInputError, input_ref


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable; some file systems cannot fsync a folder (harmless)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_target(path: str | Path, overwrite: bool = False, input_name: str | None = None,
                 folder: bool = False) -> Path:
    """Check that ``path`` can be written as a *file* (or, with ``folder``, as a folder of files),
    before any work is done.

    Refuses an existing target without ``overwrite`` (an empty folder counts as absent), a file
    target that is a folder or a folder target that is a file, a missing parent folder, a parent
    that is a file and an unwritable parent — each as one :class:`VDOTInputError`.
    """
    path = Path(path)
    name = input_name or str(path)
    if not folder and path.is_dir():
        raise VDOTInputError(name, f"{path} is a folder", "give a file name")
    if folder and path.exists() and not path.is_dir():
        raise VDOTInputError(name, f"{path} is an existing file, not a folder", "choose another name")
    occupied = path.exists() and (not folder or any(path.iterdir()))
    if occupied and not overwrite:
        raise VDOTInputError(name, f"{path} already exists", f"choose another name or pass {input_ref('overwrite')}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise VDOTInputError(name, f"folder {parent} does not exist", f"create it first (mkdir -p {parent})")
    if not parent.is_dir():
        raise VDOTInputError(name, f"{parent} is a file, not a folder", "choose an output inside a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VDOTInputError(name, f"folder {parent} is not writable", "choose a folder you can write to")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = False, input_name: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    The temporary name keeps the suffix (``.name.<pid>.partial.mp4``) so writers that pick a format
    from the extension (OpenCV, PyAV) still work. On any exception the temporary file is removed and
    ``path`` is untouched.
    """
    path = check_target(path, overwrite, input_name)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"the writer produced no file at {tmp}")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if path.exists() and not overwrite:  # appeared while we were writing (another process)
            raise VDOTInputError(input_name or str(path), f"{path} appeared while writing",
                                 f"choose another name or pass {input_ref('overwrite')}")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def commit_folder(tmp: str | Path, final: str | Path) -> Path:
    """Rename the complete folder ``tmp`` onto ``final`` (its sibling) and make the rename durable.

    An existing ``final`` is first moved aside to ``<final>.old.tmp`` and deleted after the rename, so
    a kill at any point leaves the old folder, or the new one, under a recognisable name. For folders
    filled by several processes (a distributed checkpoint); one process uses :func:`atomic_folder`.
    """
    tmp, final = Path(tmp), Path(final)
    fsync_dir(tmp)
    if final.exists():
        trash = final.with_name(f"{final.name}.old.tmp")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


@contextlib.contextmanager
def atomic_folder(path: str | Path, overwrite: bool = False, input_name: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` whole
    (:func:`commit_folder`). Write its files with the helpers here. On any exception the temporary
    folder is removed and ``path`` is untouched."""
    path = check_target(path, overwrite, input_name, folder=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists() and not overwrite and any(path.iterdir()):
            raise VDOTInputError(input_name or str(path), f"{path} appeared while writing",
                                 f"choose another name or pass {input_ref('overwrite')}")
        if path.exists() and not any(path.iterdir()):
            path.rmdir()  # an empty folder counts as absent (check_target)
        commit_folder(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite)


def atomic_save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None,
                            overwrite: bool = False) -> Path:
    """``safetensors.torch.save_file`` through :func:`atomic_path` (tensors moved to CPU, made contiguous,
    shared storage copied — safetensors refuses tied views)."""
    from safetensors.torch import save_file

    clean, seen = {}, set()
    for key, value in tensors.items():
        value = value.detach().to("cpu")
        ptr = value.untyped_storage().data_ptr() if value.numel() else None
        if ptr is not None and (ptr in seen or not value.is_contiguous() or value.storage_offset() != 0
                                or value.untyped_storage().nbytes() != value.numel() * value.element_size()):
            value = value.contiguous().clone()
        if ptr is not None:
            seen.add(ptr)
        clean[key] = value
    with atomic_path(path, overwrite) as tmp:
        save_file(clean, str(tmp), metadata=metadata)
    return Path(path)


__all__ = ["atomic_folder", "atomic_path", "atomic_save_safetensors", "atomic_write_bytes", "atomic_write_text",
           "check_target", "commit_folder", "fsync_dir"]
