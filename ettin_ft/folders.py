"""Folders that appear whole or not at all: written under a staging name beside their place, then renamed;
and the checkpoints of a run folder that are complete (``run_folder.RunFolder`` builds on these)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Written last into a checkpoint, by the HF trainers and by pretraining alike: its presence marks a complete one.
STATE_FILE = "trainer_state.json"


def staging_path(path: str) -> str:
    """The staging name for ``path``: hidden, in the same folder, so the rename is atomic."""
    return os.path.join(os.path.dirname(path.rstrip("/")) or ".", f".staging-{os.path.basename(path.rstrip('/'))}")


def staging_folder(path: str) -> str:
    """The (emptied, not yet created) staging folder for ``path``."""
    staging = staging_path(path)
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def write_jsonl_whole(path: str, rows) -> None:
    """One JSON object per line, the file whole or not at all (written aside, then renamed)."""
    import json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".partial", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    os.replace(path + ".partial", path)


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


def complete_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every complete checkpoint-STEP folder in ``output_dir``, oldest first."""
    found = []
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            match = CHECKPOINT.match(name)
            path = os.path.join(output_dir, name)
            if match and os.path.isfile(os.path.join(path, STATE_FILE)):
                found.append((int(match.group(1)), path))
    return sorted(found)


def remove_unfinished(output_dir: str) -> None:
    """Remove what an interrupted write left in ``output_dir``: staging folders and incomplete checkpoints."""
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(".staging-") or (CHECKPOINT.match(name) and not os.path.isfile(os.path.join(path, STATE_FILE))):
            shutil.rmtree(path, ignore_errors=True)
