"""Opening a trained adapter for inference: base + adapter and head, read from the run's safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from transformers import PreTrainedModel

from loraclf.errors import UserError

if TYPE_CHECKING:
    from peft import PeftModel


def load_adapter(base: PreTrainedModel, adapter_folder: Path) -> PeftModel:
    """Base + trained adapter and head, read from safetensors, for inference."""
    # PEFT imports bitsandbytes where it is installed: seconds that an export folder's predictions never need.
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base, adapter_folder, is_trainable=False)
    except RuntimeError as exc:
        mismatch = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), None)
        if mismatch is None:
            raise
        raise UserError(f"adapter {adapter_folder}: does not fit the base model {base.config.name_or_path or ''} "
                        f"({mismatch}); was it trained on another base model?") from None
