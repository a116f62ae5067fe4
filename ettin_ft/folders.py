"""Folders that appear whole or not at all: written under a staging name beside their place, then renamed."""

from __future__ import annotations

import contextlib
import os
import shutil


def staging_folder(path: str) -> str:
    """The (emptied, not yet created) staging name for ``path``: hidden, in the same folder, so the rename is atomic."""
    staging = os.path.join(os.path.dirname(path.rstrip("/")) or ".", f".staging-{os.path.basename(path.rstrip('/'))}")
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def publish(staging: str, path: str) -> None:
    """Put the finished ``staging`` folder at ``path`` (replacing an older one)."""
    shutil.rmtree(path, ignore_errors=True)
    os.replace(staging, path)


@contextlib.contextmanager
def atomic_folder(path: str):
    """Yield a staging folder that becomes ``path`` when the block succeeds and is removed when it fails, so a
    kill or an error never leaves a half-written ``path``."""
    staging = staging_folder(path)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, path)
