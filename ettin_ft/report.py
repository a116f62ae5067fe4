"""The quickstart's report: results.json, REPORT.md and its plots (matplotlib, written as PNG)."""

from __future__ import annotations

import json
import os

from . import plots

PLOTS = {"loss_curves.png": "Training loss per stage", "before_after.png": "Each stage's metric before and after",
         "encoder_vs_decoder.png": "Encoder vs decoder of the same size: dense retrieval, classification, tagging and zero-shot facts"}
# (panel title, encoder stage, decoder stage, metrics) of the encoder-vs-decoder plot's fine-tuning panels
ENCODER_DECODER_PAIRS = [
    ("dense retrieval on held-out people", "dense", "dense-decoder", ("ndcg@10", "mrr@10", "recall@100")),
    ("question topics on held-out people", "classify", "classify-decoder", ("accuracy", "macro_f1")),
    ("entities in held-out biographies", "tag", "tag-decoder", ("f1", "accuracy")),
]


def encoder_decoder_panels(results: dict) -> list[tuple[str, list[str], dict]]:
    """(title, metrics, {(arch, before/after): values}) for each task both architectures have a result on: the
    fine-tuning stage pairs, and the zero-shot facts (the encoder by the release's l2r rule)."""
    by_name = {r["stage"]: r for r in results["stages"]}
    panels = []
    for title, encoder, decoder, candidates in ENCODER_DECODER_PAIRS:
        if encoder in by_name and decoder in by_name:
            metrics = [m for m in candidates if m in by_name[encoder]["after"]]
            panels.append((title, metrics, {(arch, when): by_name[stage][when] for arch, stage in
                                            (("encoder", encoder), ("decoder", decoder)) for when in ("before", "after")}))
    zeroshot = results.get("zeroshot") or {}
    if "encoder (l2r)" in zeroshot and "decoder" in zeroshot:
        panels.append(("zero-shot facts, before/after pretraining", ["acc", "acc_norm"],
                       {(arch, when): zeroshot[label][when] for arch, label in
                        (("encoder", "encoder (l2r)"), ("decoder", "decoder")) for when in ("before", "after")}))
    return panels


def zeroshot_section(zeroshot: dict) -> list[str]:
    """The pretrained pair scored zero-shot on the world's facts, and plainly whether each beats chance."""
    if not zeroshot:
        return []
    lines = ["## Zero-shot facts of the pretrained models", "",
             "Multiple choice over facts seen in pretraining (which of four employers, birth cities, universities and "
             "majors a person has), scored by `ettin_ft.zeroshot`: the decoder by log-likelihood, the encoder by the "
             "Ettin release's masked left-to-right rule (l2r) and by pseudo-log-likelihood (pll, an ablation). "
             "Before = the same shape freshly initialised. Beats chance = more than two standard errors of a guesser "
             "above it.", "",
             "| model | items | chance | acc before | acc after | acc_norm after | beats chance |", "|---|---|---|---|---|---|---|"]
    verdicts = {}
    for label, entry in zeroshot.items():
        chance, after = entry["random"], entry["after"]["acc"]
        verdicts[label] = after > chance + 2 * (chance * (1 - chance) / entry["items"]) ** 0.5
        lines.append(f"| {label} | {entry['items']} | {chance:.3f} | {entry['before']['acc']:.3f} | {after:.3f} | "
                     f"{entry['after']['acc_norm']:.3f} | {'yes' if verdicts[label] else 'no'} |")
    encoders = [label for label in verdicts if label.startswith("encoder")]
    if encoders and not any(verdicts[label] for label in encoders):
        lines += ["", "Neither encoder rule beats chance in this run; the decoder "
                  + ("does." if verdicts.get("decoder") else "does not either.")]
    return lines + [""]


def results_table(results: dict) -> str:
    lines = ["| stage | from | metric | before | after | improved | wall time |", "|---|---|---|---|---|---|---|"]
    for r in results["stages"]:
        lines.append(f"| {r['stage']} | {r['base'] or 'scratch'} | {r['metric']} "
                     f"({'higher' if r['higher_is_better'] else 'lower'} is better) | {r['before'][r['metric']]:.4f} | "
                     f"{r['after'][r['metric']]:.4f} | {'yes' if r['improved'] else 'NO'} | {r['wall_time_s']:.0f} s |")
    return "\n".join(lines)


def training_losses(output_dir: str, stage: str) -> list[tuple[int, float]]:
    path = os.path.join(output_dir, stage, "log_history.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [(row["step"], row["loss"]) for row in rows if "loss" in row and "step" in row]


def plot_quickstart(output_dir: str, results: dict) -> list[str]:
    stages = results["stages"]
    written = []

    columns = 3
    rows = (len(stages) + columns - 1) // columns
    with plots.figure(os.path.join(output_dir, "loss_curves.png"), columns, rows, size=(4 * columns, 3 * rows)) as axes:
        for axis, record in zip(axes.flat, stages):
            points = training_losses(output_dir, record["stage"])
            if points:
                axis.plot(*zip(*points))
            axis.set_title(record["stage"], fontsize=10)
            axis.set(xlabel="step", ylabel="loss")
        for axis in list(axes.flat)[len(stages):]:
            axis.axis("off")
    written.append("loss_curves.png")

    with plots.figure(os.path.join(output_dir, "before_after.png"), len(stages), size=(2.2 * len(stages), 3.2)) as axes:
        for axis, record in zip(axes.flat, stages):
            metric = record["metric"]
            axis.bar(["before", "after"], [record["before"][metric], record["after"][metric]], color=["#999999", "#3b75af"])
            axis.set_title(f"{record['stage']}\n{metric}", fontsize=9)
            axis.tick_params(labelsize=8)
    written.append("before_after.png")

    panels = encoder_decoder_panels(results)
    if panels:
        colors = {("encoder", "before"): "#bbbbbb", ("encoder", "after"): "#3b75af",
                  ("decoder", "before"): "#dddddd", ("decoder", "after"): "#e1812c"}
        width = 0.2
        with plots.figure(os.path.join(output_dir, "encoder_vs_decoder.png"), len(panels), size=(6 * len(panels), 3.5)) as axes:
            for axis, (title, metrics, sides) in zip(axes.flat, panels):
                for offset, ((arch, when), values) in enumerate(sides.items()):
                    axis.bar([i + (offset - 1.5) * width for i in range(len(metrics))], [values[m] for m in metrics], width,
                             label=f"{arch} {when}", color=colors[arch, when])
                axis.set_xticks(range(len(metrics)), metrics)
                axis.set_title(title)
                axis.set_ylim(0, 1.25)  # every metric shown is a share; the legend sits above the bars
                axis.legend(fontsize=8, ncol=2, loc="upper left")
        written.append("encoder_vs_decoder.png")
    return written


def bias_section(bias: dict) -> list[str]:
    """The WinoGender probe of the pretrained encoder and decoder (or how to add it)."""
    if not bias:
        return ["Bias probe: not run (give `--bias-data` a WinoGender folder, e.g. ../shared/data/bias/winogender).", ""]
    lines = ["## WinoGender bias probe of the pretrained models (zero-shot)", "",
             "Share of items where each pronoun version is preferred (all items; gotcha items), and Pearson r between "
             "the female-minus-male preference per occupation and its BLS share of women.", "",
             "| model | male | female | neutral | gotcha: male | female | neutral | r (BLS) |", "|---|---|---|---|---|---|---|---|"]
    for arch, metrics in bias.items():
        shares = [metrics[subset][g] for subset in ("preference", "gotcha") for g in ("male", "female", "neutral")]
        r = metrics["bls_pearson_r"]
        lines.append(f"| {arch} | " + " | ".join(f"{v:.1%}" for v in shares) + f" | {'n/a' if r is None else f'{r:.3f}'} |")
    return lines + [""]


def write_quickstart_report(output_dir: str, results: dict) -> None:
    """results.json, the plots, and REPORT.md that shows them with the results table."""
    plots = plot_quickstart(output_dir, results)
    with open(os.path.join(output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump({**results, "plots": plots}, handle, indent=2)
    config = results["config"]
    lines = [
        "# ettin-ft quickstart report", "",
        f"A {config['size']} Ettin encoder/decoder pair, pretrained {config['steps']} steps each on a synthetic world of "
        f"{config['people']} people (20% held out), and every recipe fine-tuned from it. Every number below was "
        "measured in this run; before = the stage's starting model, after = the fine-tuned one, both on held-out data.",
        "", f"Wall time: {results['wall_time_s']:.0f} s (stages run in this invocation and earlier ones: "
        f"{results['stages_wall_time_s']:.0f} s).", "", results_table(results), "",
        "All metrics per stage:", "",
    ]
    for record in results["stages"]:
        shown = ", ".join(f"{k} {record['before'][k]:.4f} → {record['after'][k]:.4f}" for k in record["after"]
                          if k in record["before"])
        lines.append(f"- **{record['stage']}** ({record['description']}; `{record['output']}`): {shown}")
    lines.append("")
    lines += zeroshot_section(results.get("zeroshot") or {})
    lines += bias_section(results.get("bias") or {})
    for name in plots:
        lines += [f"## {PLOTS[name]}", "", f"![{PLOTS[name]}]({name})", ""]
    with open(os.path.join(output_dir, "REPORT.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
