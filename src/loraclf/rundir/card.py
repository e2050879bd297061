"""The adapter folder's model card (adapter/README.md) and the base-model reference it carries.

The adapter folder is meant to stand alone: PEFT's adapter_config.json and
weights, the tokenizer, and this card, which names the base model, the labels,
the parameter budget, the metrics and the command that made it, and shows how
to load the adapter with PEFT alone.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from loraclf.config.schema import Config
from loraclf.model import pooling
from loraclf.model.hub import resolve_model_path
from loraclf.rundir import layout

POOLING_TEXT = {"cls": "the first token", "mean": "the mean over the non-padding tokens (model.pooling mean)"}


def base_reference(config: Config, run_dir: Path) -> str:
    """What `base_model_name_or_path` should say: a name that loads the base on another machine.

    A hub id as given; for a local folder or package, model.hub_id, else the hub id its README loads itself
    by, else the path as the config gave it. A random-init base exists only in this run (its base_model/)."""
    model = config.model
    if model.init == "random":
        return str((run_dir / layout.BASE_MODEL).resolve())
    if model.hub_id:
        return model.hub_id
    folder = Path(resolve_model_path(model.name_or_path))
    if not folder.is_dir():
        return model.name_or_path
    return readme_hub_id(folder) or model.name_or_path


def readme_hub_id(folder: Path) -> str | None:
    """The hub id a model folder's README loads itself by (`from_pretrained('owner/name')`), if it names one."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    found = re.search(r"""(?:from_pretrained|SentenceTransformer)\(\s*['"]([\w.-]+/[\w.-]+)['"]""",
                      readme.read_text(encoding="utf-8", errors="replace"))
    return found.group(1) if found else None


def render(config: Config, labels: list[str], parameters: dict[str, int], best: dict[str, Any],
           base: str, test: dict[str, Any] | None = None, command: str | None = None,
           native_pooling: bool = False) -> str:
    """The card's Markdown: hub metadata, then what the adapter is and how to load it (`native_pooling`: the
    model's own head pools, as ModernBERT's does)."""
    id2label = {i: name for i, name in enumerate(labels)}
    lora, tc = config.lora, config.train
    lines = ["---", "library_name: peft", "pipeline_tag: text-classification", "tags: [loraclf, lora, peft]"]
    if is_hub_id(base):
        lines.append(f"base_model: {base}")
    lines += ["---", "", f"# Text classifier: {lora.method.upper()} adapter on {base}", "",
              "Trained with loraclf under a trainable-parameter budget.", "",
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
    lines += ["", "## Use", ""] + use(config, labels, base, native_pooling)
    if command:
        lines += ["", "## Made by", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


def is_hub_id(name: str) -> bool:
    """`owner/name` as the hub spells it, not a path on this machine."""
    return re.fullmatch(r"[\w-][\w.-]*/[\w-][\w.-]*", name) is not None and not Path(name).exists()


def use(config: Config, labels: list[str], base: str, native_pooling: bool = False) -> list[str]:
    """How to load the adapter with PEFT alone, and what plain loading would get wrong for this run.
    `native_pooling`: the model pools in its own head (ModernBERT), told by `classifier_pooling`."""
    lines = []
    if config.model.head != "default":
        lines += [f"This adapter's head (`model.head {config.model.head}`) has no transformers class: loaded with "
                  "PEFT on the stock model, its head would be partly random. Use loraclf, or "
                  "`loraclf export RUN_DIR --format onnx` for a file any ONNX runtime opens.", ""]
    elif config.data.task != "single_label" or config.data.text_pair_column or config.quantization.bits:
        lines += ["This run's task, text pairs or quantized base need loraclf's loading: use loraclf, or "
                  "`loraclf export RUN_DIR --format merged`.", ""]
    id2label = {i: name for i, name in enumerate(labels)}
    label2id = {name: i for i, name in enumerate(labels)}
    lines += ["With PEFT alone (the base model's own config has no labels; pass them):", "",
              "```python", "from peft import AutoPeftModelForSequenceClassification",
              "from transformers import AutoTokenizer", "",
              "model = AutoPeftModelForSequenceClassification.from_pretrained(",
              f"    ADAPTER_FOLDER, num_labels={len(labels)},"
              + (f" classifier_pooling={config.model.pooling!r}," if native_pooling else ""),
              f"    id2label={id2label!r},",
              f"    label2id={label2id!r}).eval()",
              "tokenizer = AutoTokenizer.from_pretrained(ADAPTER_FOLDER)  # truncates at "
              f"{config.data.max_length} tokens, as in training"]
    if config.model.pooling == "mean" and not native_pooling:
        lines += ["", "# The head reads the mean over the non-padding tokens, not the first token: without this hook",
                  "# the model gives other answers.", *pooling_source(), "",
                  "encoder = getattr(model.get_base_model(), model.get_base_model().base_model_prefix)",
                  "encoder.register_forward_hook(_mean_into_first, with_kwargs=True)"]
    lines += ["```", "",
              f"Base model: `{base}` (`base_model_name_or_path`); pass another copy of it as "
              "`AutoModelForSequenceClassification.from_pretrained(...)` to `PeftModel.from_pretrained` if that name "
              "does not load where you are.", "",
              "With loraclf (the run folder, this folder's parent): `loraclf.Classifier.load(RUN_DIR)` or "
              "`loraclf predict RUN_DIR \"some text\"`; `loraclf export RUN_DIR --format merged` for one folder "
              "that transformers loads without PEFT."]
    return lines


def pooling_source() -> list[str]:
    """The mean-pooling hook as source, self-contained: the card and the merged export's modeling code carry the
    very functions loraclf runs."""
    return ["import torch", "from typing import Any", "", "",
            *inspect.getsource(pooling.masked_mean).splitlines(), "", "",
            *inspect.getsource(pooling._mean_into_first).splitlines()]
