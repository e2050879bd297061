"""The adapter folder's model card (adapter/README.md) and the base-model reference it carries.

The adapter folder is meant to stand alone: PEFT's adapter_config.json and
weights, the tokenizer, and this card, which names the base model, the labels,
the parameter budget, the metrics and the command that made it, and shows how
to load the adapter with PEFT alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loraclf.config.schema import Config
from loraclf.model.build import resolve_model_path
from loraclf.rundir import layout

POOLING_TEXT = {"cls": "the first token", "mean": "the mean over the non-padding tokens (model.pooling mean)"}


def base_reference(config: Config, run_dir: Path) -> str:
    """What `base_model_name_or_path` should say: the hub id for a hub model, else the folder that loads it."""
    if config.model.init == "random":
        return str((run_dir / layout.BASE_MODEL).resolve())
    name = resolve_model_path(config.model.name_or_path)
    return str(Path(name).resolve()) if Path(name).exists() else name


def render(config: Config, labels: list[str], parameters: dict[str, int], best: dict[str, Any],
           base: str, test: dict[str, Any] | None = None, command: str | None = None) -> str:
    """The card's Markdown: hub metadata, then what the adapter is and how to load it."""
    id2label = {i: name for i, name in enumerate(labels)}
    label2id = {name: i for i, name in enumerate(labels)}
    lora, tc = config.lora, config.train
    lines = ["---", "library_name: peft", "pipeline_tag: text-classification", "tags: [loraclf, lora, peft]"]
    if not Path(base).is_absolute():
        lines.append(f"base_model: {base}")
    lines += ["---", "", f"# Text classifier: {lora.method.upper()} adapter on {base}", "",
              "Trained with [loraclf](https://github.com/) under a trainable-parameter budget.", "",
              "## Labels", "", "| id | label |", "|---|---|"]
    lines += [f"| {i} | {name} |" for i, name in id2label.items()]
    lines += ["", "## Parameters", "",
              f"Trainable {parameters['trainable']:,} of {parameters['total']:,} (budget "
              f"{parameters['max_trainable']:,}) = adapter {parameters['lora']:,} + head {parameters['head']:,}"
              f" + other {parameters['other']:,}.", "",
              f"Adapter: {lora.method}, r={lora.r}, alpha={lora.alpha}, dropout {lora.dropout}, targets "
              f"{', '.join(parameters.get('targets') or lora.target_modules)}; head `{config.model.head}` trained "
              f"in full, reading {POOLING_TEXT[config.model.pooling]}.", "",
              f"Training: AdamW lr {tc.lr}, weight decay {tc.weight_decay}, {tc.scheduler} schedule, {tc.epochs} epochs, "
              f"batch {tc.batch_size}; texts truncated at {config.data.max_length} tokens."
              + (f" Then {config.adapt.rounds} rounds of {config.adapt.method.replace('_', '-')} adaptation on "
                 f"unlabelled texts ({config.data.unlabelled_file})." if config.adapt.method != "none" else ""),
              "", "## Metrics", ""]
    if best:
        lines.append(f"- best validation (step {best['step']}): accuracy {best['val_accuracy']:.4f}, "
                     f"macro-F1 {best['val_macro_f1']:.4f}, loss {best['val_loss']:.4f}")
    if test:
        lines.append(f"- test ({test['count']:,} items): accuracy {test['accuracy']:.4f}, "
                     f"macro-F1 {test['macro_f1']:.4f}")
    lines += ["", "## Use", "", "With PEFT alone (the base model's own config has no labels; pass them):", "",
              "```python", "from peft import AutoPeftModelForSequenceClassification",
              "from transformers import AutoTokenizer", "",
              "model = AutoPeftModelForSequenceClassification.from_pretrained(",
              f"    ADAPTER_FOLDER, num_labels={len(labels)},",
              f"    id2label={id2label!r},",
              f"    label2id={label2id!r})",
              "tokenizer = AutoTokenizer.from_pretrained(ADAPTER_FOLDER)  # truncates at "
              f"{config.data.max_length} tokens, as in training"]
    if config.model.pooling == "mean":
        lines += ["# The head reads the mean over the tokens: without these lines it would read the first token.",
                  "from loraclf.pooling import apply_pooling", "apply_pooling(model, 'mean')"]
    lines += ["```", "",
              "With loraclf (the run folder, this folder's parent): `loraclf.Classifier.load(RUN_DIR)` or "
              "`loraclf predict RUN_DIR \"some text\"`."]
    if command:
        lines += ["", "## Made by", "", "```", command, "```"]
    return "\n".join(lines) + "\n"
