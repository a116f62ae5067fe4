"""Find a model: a local folder as is, a hub repository with one quick request, or the local cache when
the hub cannot be reached — failing fast with one clear line (the libraries otherwise retry for minutes)."""

from __future__ import annotations

import os
from dataclasses import replace

from .errors import EttinError
from .registry import ModelRef, resolve

OFFLINE_HINT = (
    "pass a local folder instead (e.g. --model runs/pretrain/final), or build one offline with "
    "`python -m ettin_ft.pretrain --size tiny --data PATH --output-dir DIR`"
)


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks the Hugging Face libraries not to touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false")


def unreachable_because(error: Exception) -> str:
    """Why the hub could not serve a request, for an error line: the offline setting or the client's error."""
    return "HF_HUB_OFFLINE is set and it is not in the local cache" if hub_offline() else type(error).__name__


def _from_cache(ref: ModelRef) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(ref.path, revision=ref.revision, local_files_only=True)
    except Exception:  # not cached (the hub client raises several types for this)
        return None


def locate(name: str, arch: str | None = None) -> ModelRef:
    """Resolve ``name`` and make sure it can be loaded; a model already in the local cache is used from there."""
    ref = resolve(name, arch)
    if ref.local:
        if not os.path.isfile(os.path.join(ref.path, "config.json")):
            raise EttinError(
                f"folder {ref.path!r} has no config.json; expected a model saved with save_pretrained "
                "(for example the final/ folder that every ettin_ft command writes)"
            )
        return ref
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if hub_offline():
        cached = _from_cache(ref)
        if cached is None:
            raise EttinError(f"HF_HUB_OFFLINE is set and {ref.describe()} is not in the local cache; {OFFLINE_HINT}")
        return replace(ref, path=cached, revision=None, local=True)
    try:
        HfApi().model_info(ref.path, revision=ref.revision, timeout=10)
    except RevisionNotFoundError:
        raise EttinError(f"revision {ref.revision!r} of {ref.path} does not exist on the Hugging Face hub") from None
    except GatedRepoError:
        raise EttinError(f"{ref.describe()} is gated: log in with `hf auth login` after accepting its terms") from None
    except RepositoryNotFoundError:
        raise EttinError(f"no model {ref.describe()} on the Hugging Face hub (or it is private); {OFFLINE_HINT}") from None
    except Exception as error:  # network failures surface as several httpx/OSError types
        cached = _from_cache(ref)
        if cached is None:
            raise EttinError(
                f"cannot reach the Hugging Face hub to load {ref.describe()} ({type(error).__name__}) and it is "
                f"not in the local cache; {OFFLINE_HINT}"
            ) from None
        return replace(ref, path=cached, revision=None, local=True)
    return ref


def locate_for(flag: str, name: str, way_out: str) -> ModelRef:
    """``locate`` for a model given by ``flag`` (not --model): its failure as one line naming the flag, with
    ``way_out`` in place of the --model hint."""
    try:
        return locate(name)
    except EttinError as error:
        reason = str(error).split(";")[0]
        raise EttinError(f"{flag} {name}: {reason}; {way_out}") from None


def hub_revisions(repo_id: str) -> list[str]:
    """The tags of a hub model (the Ettin repositories tag their training checkpoints), in the hub's order."""
    from huggingface_hub import HfApi

    if hub_offline():
        raise EttinError(f"HF_HUB_OFFLINE is set: cannot list the revisions of {repo_id}; give --revisions explicitly")
    try:
        refs = HfApi().list_repo_refs(repo_id)
    except Exception as error:  # network failures surface as several httpx/OSError types
        raise EttinError(f"cannot list the revisions of {repo_id} on the Hugging Face hub ({type(error).__name__}); "
                         "give --revisions explicitly") from None
    return [tag.name for tag in refs.tags]


def check_push_to_hub() -> None:
    """--push-to-hub: one quick request before training (who is logged in), so a run that could not upload stops
    now, in one line, instead of after training; the trainer's own mechanism uploads."""
    if hub_offline():
        raise EttinError("--push-to-hub: HF_HUB_OFFLINE is set; unset it to upload, or drop --push-to-hub and upload "
                         "DIR/final later (`hf upload`)")
    from huggingface_hub import HfApi

    try:
        HfApi().whoami()
    except Exception as error:  # network failures surface as several httpx/OSError types; a missing login too
        raise EttinError(f"--push-to-hub: cannot reach the Hugging Face hub as a logged-in user ({type(error).__name__}); "
                         "log in with `hf auth login`, or drop --push-to-hub and upload DIR/final later") from None
