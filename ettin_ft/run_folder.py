"""One run folder for every kind of run: fine-tuning, pretraining, probes, quickstart stages and study runs.

A folder is new, unfinished (complete checkpoint-N folders to go on from) or finished: it holds its marker, the
file written last and whole (metrics.json for training runs and probes, stage.json for quickstart stages). Every
writer goes through here to refuse mixing runs, resolve a resume, tidy up after a failure and mark the run finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass

from transformers import TrainerCallback

from .cards import write_model_cards
from .config import dump_yaml, plain, to_dict
from .errors import EttinError
from .folders import (STATE_FILE, atomic_folder, complete_checkpoints, publish, remove_unfinished, staging_folder,
                      staging_path)


def processes(cpu: bool | None = None):
    """accelerate's view of the processes (torchrun / accelerate launch). The first call sets it up: over gloo where
    there is no GPU, as the trainers and pretraining do (without cpu=True it would see one process), or where the
    caller works on the CPU (``cpu``)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available() if cpu is None else cpu)


def is_main_process() -> bool:
    """True in the one process that writes (the only one without torchrun/accelerate launch)."""
    return processes().is_main_process


def wait_for_everyone() -> None:
    processes().wait_for_everyone()


@dataclass(frozen=True)
class RunFolder:
    path: str
    marker: str = "metrics.json"  # the file a finished run writes last
    resume_flag: str = "--resume-from-checkpoint latest"  # how the run's command continues an unfinished run

    @property
    def finished(self) -> bool:
        return os.path.exists(os.path.join(self.path, self.marker))

    @property
    def checkpoints(self) -> list[tuple[int, str]]:
        """(step, path) of the complete checkpoints, oldest first."""
        return complete_checkpoints(self.path)

    @property
    def state(self) -> str:
        return "finished" if self.finished else "unfinished" if self.checkpoints else "new"

    def refuse_finished(self, what: str = "a finished run") -> None:
        if self.finished:
            raise EttinError(f"output folder {self.path} already holds {what}; choose another --output-dir")

    def resume_point(self, wanted: str | None, start_if_new: bool = False) -> str | None:
        """The checkpoint to go on from, or None to start: ``wanted`` is the run's resume setting (None, 'latest'
        or a checkpoint folder). A finished folder, or an unfinished one without the setting, is refused; 'latest'
        in a new folder is refused too, unless ``start_if_new`` (one of several runs asked to go on where they can)."""
        self.refuse_finished()
        found = self.checkpoints
        if not wanted:
            if found:
                raise EttinError(f"output folder {self.path} holds an unfinished run ({os.path.basename(found[-1][1])}); "
                                 f"pass {self.resume_flag} to continue it, or choose another --output-dir")
            return None
        if wanted == "latest":
            if found:
                return found[-1][1]
            if start_if_new:
                return None
            raise EttinError(f"{self.resume_flag}: {self.path} holds no complete checkpoint-N folder; start without "
                             "the flag")
        if not os.path.isfile(os.path.join(wanted, STATE_FILE)):
            raise EttinError(f"--resume-from-checkpoint {wanted}: not a complete checkpoint (no {STATE_FILE}); "
                             "expected a DIR/checkpoint-N folder or 'latest'")
        return wanted

    def mark_finished(self, content: dict) -> None:
        """Write the marker (JSON) whole, last: from then on the run is finished."""
        path = os.path.join(self.path, self.marker)
        with open(path + ".partial", "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2, ensure_ascii=False)
        os.replace(path + ".partial", path)

    @contextlib.contextmanager
    def tidy_on_failure(self):
        """Run the block; if it fails or is interrupted (Ctrl-C included), the main process removes staging folders
        and incomplete checkpoints, keeps complete checkpoints to go on from, and removes the folder itself if it
        was empty before and nothing complete is in it. (A process killed outright cannot tidy up; the next run
        into the folder does, as it starts.)"""
        created = not os.path.isdir(self.path) or not os.listdir(self.path)
        if is_main_process():
            remove_unfinished(self.path)
        try:
            yield self
        except BaseException:
            if is_main_process():
                remove_unfinished(self.path)
                if created and not self.checkpoints and not self.finished:
                    shutil.rmtree(self.path, ignore_errors=True)
            raise


class SkipLastCheckpoint(TrainerCallback):
    """No checkpoint at the last step (the trainers save one when checkpoints are on): DIR/final is published then."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = False


def publish_trained(trainer, name: str = "final", finish=None) -> str:
    """DIR/<name> through a staging folder with the trainer's own saving, which gathers sharded weights
    (FSDP, DeepSpeed) from every process and writes from the main process; every process calls it.
    ``finish(folder)`` then completes the saved folder on the main process, before it is published."""
    path = os.path.join(trainer.args.output_dir, name)
    staging = staging_folder(path) if is_main_process() else None
    wait_for_everyone()
    trainer.save_model(staging_path(path))
    wait_for_everyone()
    if staging is not None:
        if finish is not None:
            finish(staging)
        publish(staging, path)
    wait_for_everyone()
    return path


def publish_from_main(model, tokenizer, output_dir: str, name: str) -> str:
    """DIR/<name> holding ``model`` and ``tokenizer``, written by the main process alone through a staging folder
    (for what the trainer does not save, e.g. a LoRA model merged after training)."""
    path = os.path.join(output_dir, name)
    if is_main_process():
        with atomic_folder(path) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    wait_for_everyone()
    return path


def publish_with_head(trainer, tokenizer, lora: bool):
    """DIR/final/ of a model with a task head (classify, tag); returns the model published. With LoRA, final/ is the
    merged model and DIR/adapter/ the adapter: an adapter alone cannot carry the label set (transformers and peft
    rebuild the head from the base model's config)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not lora:
        publish_trained(trainer)
        return model
    publish_trained(trainer, "adapter")
    model = model.merge_and_unload()
    publish_from_main(model, tokenizer, trainer.args.output_dir, "final")
    return model


def run_settings(config, training_args) -> dict:
    """config.yaml's content: the recipe's fields and the training arguments that differ from the library's."""
    defaults = {f.name: f.default for f in dataclasses.fields(training_args) if f.default is not dataclasses.MISSING}
    changed = {k: v for k, v in to_dict(training_args).items() if k not in defaults or plain(defaults[k]) != v}
    return {**to_dict(config), "training_arguments": changed}


def write_results(output_dir: str, config, training_args, before: dict, after: dict, trainer=None,
                  extra: dict | None = None) -> None:
    """config.yaml, metrics.json (plus ``extra`` entries), (with ``trainer``) the log as log_history.jsonl, and
    the model cards of the published model folders, written by the main process; every process calls it."""
    if is_main_process():
        _write_results(output_dir, config, training_args, before, after, trainer, extra)
    wait_for_everyone()


def _write_results(output_dir: str, config, training_args, before: dict, after: dict, trainer, extra) -> None:
    os.makedirs(output_dir, exist_ok=True)
    if trainer is not None:
        with open(os.path.join(output_dir, "log_history.jsonl"), "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in trainer.state.log_history)
    settings = run_settings(config, training_args)
    with open(os.path.join(output_dir, "config.yaml"), "w", encoding="utf-8") as handle:
        handle.write(dump_yaml(settings))
    dataset = getattr(trainer, "train_dataset", None)
    write_model_cards(output_dir, intended_use=config.INTENDED_USE, base_model=config.model, data=config.data,
                      rows=len(dataset) if hasattr(dataset, "__len__") else None, settings=settings, before=before,
                      after=after, pipeline_tag=config.PIPELINE_TAG)
    RunFolder(output_dir).mark_finished({"before": before, "after": after, **(extra or {})})


def write_probe_results(output_dir: str, records, metrics: dict) -> None:
    """A probe's DIR/items.jsonl (one JSON object per record), then DIR/metrics.json, which marks it finished;
    written by the main process, every process calls it."""
    if is_main_process():
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "items.jsonl"), "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in records)
        RunFolder(output_dir).mark_finished(metrics)
    wait_for_everyone()
