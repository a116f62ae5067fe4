"""Pretraining checkpoints: complete ones only (written under a staging name, then renamed), pruning, and resuming
from the latest."""

from __future__ import annotations

import json
import os
import shutil

from ..errors import EttinError
from ..folders import STATE_FILE, complete_checkpoints, publish, staging_folder


def save_checkpoint(accelerator, module, tokenizer, output_dir: str, name: str, state: dict | None) -> str:
    """Write to a staging folder, then rename: a kill never leaves a partial checkpoint behind, and a failed
    write (disk full, no permission) leaves the last complete checkpoint as it was."""
    final_path = os.path.join(output_dir, name)
    staging = staging_folder(final_path)
    # Every process takes part: under FSDP or DeepSpeed the full weights are gathered from all of them.
    weights = {key.removeprefix("model."): value for key, value in accelerator.get_state_dict(module).items()}
    try:
        if accelerator.is_main_process:
            os.makedirs(staging)
        accelerator.wait_for_everyone()
        if state is not None:
            accelerator.save_state(os.path.join(staging, "training_state"))
        accelerator.wait_for_everyone()  # every process's share of the state is written before the rename
        if accelerator.is_main_process:
            accelerator.unwrap_model(module).model.save_pretrained(staging, state_dict=weights)
            tokenizer.save_pretrained(staging)
            if state is not None:
                with open(os.path.join(staging, STATE_FILE), "w") as handle:
                    json.dump(state, handle, indent=2)
            publish(staging, final_path)
    except OSError as error:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        kept = complete_checkpoints(output_dir)
        raise EttinError(
            f"cannot write {name} in {output_dir} ({error.strerror or error}); "
            + (f"{os.path.basename(kept[-1][1])} is intact: free space or fix the folder, then rerun with --resume"
               if kept else "no complete checkpoint yet: free space or fix the folder, then rerun")) from None
    accelerator.wait_for_everyone()
    return final_path


def prune_checkpoints(output_dir: str, keep: int) -> None:
    for _, path in complete_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def resume(accelerator, output_dir: str) -> tuple[int, list, dict | None]:
    """Load the latest complete checkpoint into ``accelerator``: (its step, the log so far, the metrics before
    training); (0, [], None) when there is none."""
    checkpoints = complete_checkpoints(output_dir)
    if not checkpoints:
        return 0, [], None
    step, path = checkpoints[-1]
    accelerator.load_state(os.path.join(path, "training_state"))
    with open(os.path.join(path, STATE_FILE)) as handle:
        saved = json.load(handle)
    accelerator.print(f"resuming from {path} (step {step})")
    return step, saved["log_history"], saved["before"]
