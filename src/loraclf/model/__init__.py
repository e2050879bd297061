"""Stage 3, the network: encoder, head, pooling, PEFT adapter, quantization, kernels, exact budget, plan.

Imports config and data (batches for `logits`)."""
