"""Peak memory of `ettin_ft.pretrain` against the size of a local text corpus, and the tokenising each process
does under torchrun.

Corpora of 24 MB, 238 MB and 2 GB are made by repeating ../shared/data/pretrain; each run trains a tiny encoder
for 3 steps (tokenising the whole corpus first) with a tokenizer trained once on the shared text. Peak memory
is the peak of the private (anonymous) resident memory of the run's processes together (the training process
and its loader worker), sampled every 0.2 s: memory-mapped Arrow pages are the page cache's and not counted. With --baseline COMMIT the same runs of an earlier ettin-ft (exported with `git archive`) are
measured too, on the two smaller corpora. First, a two-process run (torchrun, gloo) on the 238 MB corpus reports
how many documents each process tokenised.

    python benchmarks/pretrain_memory.py --work-dir runs/pretrain-memory --baseline c8d27d1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "pretrain"
SIZES_MB = (24, 238, 2048)


def make_corpus(path: Path, megabytes: int) -> None:
    if path.exists() and path.stat().st_size >= megabytes * 2**20:
        return
    text = "".join(p.read_text() for p in sorted(SHARED.rglob("*.txt")))
    with open(path, "w", encoding="utf-8") as handle:
        written = 0
        while written < megabytes * 2**20:
            handle.write(text)
            written += len(text.encode())


def make_tokenizer(folder: Path) -> None:
    if (folder / "tokenizer.json").exists():
        return
    from ettin_ft.tokenizer import train_tokenizer

    lines = [line for p in sorted(SHARED.rglob("*.txt")) for line in p.read_text().splitlines() if line.strip()]
    train_tokenizer(lines, vocab_size=8192, arch="encoder", model_max_length=1024).save_pretrained(folder)


def pretrain_args(corpus: Path, tokenizer: Path, output: Path) -> list[str]:
    return ["--size", "tiny", "--arch", "encoder", "--data", str(corpus), "--tokenizer", str(tokenizer),
            "--output-dir", str(output), "--max-steps", "3", "--seq-len", "512", "--batch-size", "8",
            "--num-workers", "1", "--report-to", "none", "--eval-documents", "50", "--eval-every", "0",
            "--save-every", "0", "--warmup-steps", "1", "--precision", "fp32"]


def private_memory_mb(root: int) -> float:
    """Private (anonymous) resident memory of ``root`` and every process below it, summed: what runs out. (The
    Arrow files are memory-mapped: their pages count in RSS but are the page cache's, dropped under pressure.)"""
    children: dict[int, list[int]] = {}
    anonymous: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        children.setdefault(int(fields["PPid"]), []).append(int(pid))
        anonymous[int(pid)] = int(fields.get("RssAnon", "0 kB").split()[0])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += anonymous.get(pid, 0)
        todo += children.get(pid, [])
    return total / 1024


def measure(command: list[str], env: dict, cwd: Path = REPO) -> dict:
    """Run ``command``: wall seconds, the peak of its processes' private memory (sampled every 0.2 s) and the end
    of its stderr."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=cwd)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, private_memory_mb(process.pid))
            time.sleep(0.2)
        log.seek(0)
        stderr = log.read()[-20000:]
    if process.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{stderr[-3000:]}")
    return {"seconds": time.perf_counter() - start, "peak_private_mb": peak, "stderr": stderr}


def export(commit: str, folder: Path) -> Path:
    """That commit's ettin_ft package, importable from ``folder``."""
    if not (folder / "ettin_ft").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "ettin_ft"], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="runs/pretrain-memory")
    parser.add_argument("--baseline", help="an earlier commit to measure beside this checkout")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES_MB)), help="corpus sizes in MB")
    args = parser.parse_args()
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    make_tokenizer(work / "tokenizer")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true"}
    rows = []
    corpus = work / "corpus-238mb.txt"
    make_corpus(corpus, 238)
    output = work / "run-238mb-two-processes"
    subprocess.run(["rm", "-rf", str(output)], check=True)
    result = measure([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
                      "-m", "ettin_ft.pretrain", *pretrain_args(corpus, work / "tokenizer", output)], env)
    shares = {int(rank): int(done) for rank, done in
              re.findall(r"tokenising \(process (\d)\): 100%\|[^|]*\| (\d+)/\d+", result["stderr"])}
    rows.append({"side": "ettin-ft, 2 processes", "corpus_mb": 238, "seconds": result["seconds"],
                 "peak_private_mb": result["peak_private_mb"], "documents_tokenised_per_process": shares})
    print(json.dumps(rows[-1]))
    for megabytes in map(int, args.sizes.split(",")):
        corpus = work / f"corpus-{megabytes}mb.txt"
        make_corpus(corpus, megabytes)
        sides = [("ettin-ft", REPO)]
        if args.baseline and megabytes < 1000:
            sides.append((f"baseline {args.baseline}", export(args.baseline, work / "baseline")))
        for side, folder in sides:
            output = work / f"run-{megabytes}mb-{side.split()[0]}"
            subprocess.run(["rm", "-rf", str(output)], check=True)
            # `python -m` imports ettin_ft from the folder it runs in: this checkout's, or the baseline's
            result = measure([sys.executable, "-m", "ettin_ft.pretrain", *pretrain_args(corpus, work / "tokenizer", output)],
                             env, cwd=folder)
            rows.append({"side": side, "corpus_mb": round(corpus.stat().st_size / 2**20), "seconds": result["seconds"],
                         "peak_private_mb": result["peak_private_mb"]})
            print(json.dumps(rows[-1]), flush=True)
    with open(work / "results.json", "w") as handle:
        json.dump({"when": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
