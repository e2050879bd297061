"""loraclf: LoRA fine-tuning of pretrained encoders for text classification under a parameter budget."""

__version__ = "0.1.0"
