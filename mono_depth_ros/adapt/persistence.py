"""Where adapted weights live: a checkpoint directory with a rotating pair of files.

``<dir>/adapted.pt`` is the newest good checkpoint, ``<dir>/adapted.prev.pt`` the
one before. A save rotates latest -> prev, then writes latest atomically
(:func:`mono_depth_ros.checkpoint.save_checkpoint`: temp file, fsync, rename).
A kill at any moment leaves either a complete latest, or no latest and a
complete prev; temp files are never loaded. Loading tries latest, then prev,
naming every file it rejects, and returns None when neither is usable (the
caller falls back to the shipped weights). A rejected file is renamed to
``<name>.rejected`` so that the next save never rotates a corrupt latest over a
good prev (and the file stays for inspection).
"""
from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path

import torch

from mono_depth_ros.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["CheckpointStore", "LATEST", "PREVIOUS", "REJECTED_SUFFIX"]

log = logging.getLogger(__name__)

LATEST = "adapted.pt"
PREVIOUS = "adapted.prev.pt"
REJECTED_SUFFIX = ".rejected"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class CheckpointStore:
    """Atomic, rotating checkpoints in one directory (created if missing)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory).expanduser()
        self.saves = 0
        self.errors = 0

    def _ensure_dir(self) -> Path:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"checkpoint directory {self.dir} cannot be created: {exc}") from None
        if not os.access(self.dir, os.W_OK):
            raise CheckpointError(f"checkpoint directory {self.dir} is not writable")
        return self.dir.resolve()

    def path_for(self, name: str) -> Path:
        """Validated path of ``name`` inside the directory (no traversal, no symlink escape)."""
        if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
            raise CheckpointError(f"invalid checkpoint name {name!r}: use letters, digits, '_', '-', '.' "
                                  f"(no path separators, no leading dot)")
        if not name.endswith(".pt"):
            name += ".pt"
        root = self._ensure_dir()
        path = root / name
        if path.is_symlink() or (path.exists() and path.resolve().parent != root):
            raise CheckpointError(f"refusing to write {path}: it is a symlink / leaves {root}")
        return path

    def save(self, model: torch.nn.Module, state_dict: dict, input_size: tuple[int, int], steps: int,
             frames_seen: int, meta: dict | None = None, name: str | None = None) -> Path:
        """Write ``state_dict`` (into a copy of ``model``) as the newest checkpoint (or as ``name``)."""
        shadow = copy.deepcopy(model)
        shadow.load_state_dict(state_dict)
        try:
            if name is not None:
                path = self.path_for(name)
            else:
                root = self._ensure_dir()
                path = root / LATEST
                if path.exists() and not path.is_symlink():
                    os.replace(path, root / PREVIOUS)
            save_checkpoint(path, shadow, input_size, steps=steps, frames_seen=frames_seen, meta=meta)
        except CheckpointError:
            self.errors += 1
            raise
        except OSError as exc:  # full disk, file size limit, read-only, ...
            self.errors += 1
            raise CheckpointError(f"cannot write checkpoint in {self.dir}: {exc.strerror or exc}"
                                  f"{f' (errno {exc.errno})' if exc.errno else ''}") from None
        except Exception as exc:  # whatever else: the caller keeps serving, it must get a CheckpointError
            self.errors += 1
            raise CheckpointError(f"cannot write checkpoint in {self.dir}: {type(exc).__name__}: {exc}") from None
        self.saves += 1
        return path

    def load_latest(self, report=None, quarantine: bool = True):
        """(model, meta, path) of the newest loadable checkpoint, or None.

        Every rejected file is reported by name (``report(text)``, default: this module's logger)
        and, with ``quarantine``, renamed to ``<name>.rejected``.
        """
        report = report or log.error
        for name in (LATEST, PREVIOUS):
            path = self.dir / name
            if not path.exists():
                continue
            try:
                model, meta = load_checkpoint(path)
                return model, meta, path
            except CheckpointError as exc:
                moved = ""
                if quarantine:
                    try:
                        os.replace(path, path.with_name(path.name + REJECTED_SUFFIX))
                        moved = f"; renamed to {path.name}{REJECTED_SUFFIX}"
                    except OSError as mv:
                        moved = f"; could not rename it: {mv.strerror or mv}"
                report(f"ignoring unusable checkpoint {path}: {exc}{moved}")
        return None

    def cleanup_temp(self) -> int:
        """Remove temp files left by a save that was killed. Returns how many."""
        n = 0
        if self.dir.is_dir():
            for p in self.dir.glob(".*.tmp"):
                try:
                    p.unlink()
                    n += 1
                except OSError:
                    pass
        return n
