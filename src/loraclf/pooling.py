"""`loraclf.pooling.apply_pooling`, as adapter model cards written before the package layout import it."""

from loraclf.model.pooling import apply_pooling

__all__ = ["apply_pooling"]
