"""What only a GPU shows: training in bf16 and in fp16 with loss scaling, and prediction on CUDA.

Skipped without CUDA; benchmarks/gpu_check.sh runs them on a GPU machine, with a tiny model and texts it makes
there (LORACLF_TEST_MODEL, LORACLF_TEST_DATA), since that machine may lack ../shared.
"""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")]


@pytest.fixture(scope="module")
def model_and_data(request, tmp_path_factory):
    if os.environ.get("LORACLF_TEST_MODEL"):
        return Path(os.environ["LORACLF_TEST_MODEL"]), Path(os.environ["LORACLF_TEST_DATA"])
    from conftest import write_csv

    texts, labels = request.getfixturevalue("agnews_rows")
    return request.getfixturevalue("tiny_model_dir"), write_csv(tmp_path_factory.mktemp("cuda") / "t.csv",
                                                                texts[:120], labels[:120])


def cuda_config(model: Path, data: Path, precision: str):
    from loraclf.config.schema import Config

    config = Config()
    config.model.name_or_path, config.model.init = str(model), "random"
    config.data.dataset, config.data.train_file = None, str(data)
    config.data.label_names = ["World", "Sports", "Business", "Sci/Tech"]
    config.data.max_length, config.data.test_size, config.data.val_fraction = 64, 16, 0.2
    config.train.epochs, config.train.max_steps, config.train.batch_size = 1, 6, 8
    config.train.device, config.train.precision, config.train.progress = "cuda", precision, False
    return config


def test_auto_precision_is_what_the_gpu_runs_natively():
    from loraclf.model import runtime

    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert runtime.autocast_dtype("auto", runtime.pick_device("auto")) is expected


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_on_cuda_learns_in_each_precision(model_and_data, tmp_path, precision):
    from loraclf.inference.classifier import Classifier
    from loraclf.training.recipe import train

    model, data = model_and_data
    summary = train(cuda_config(model, data, precision), tmp_path / "run", log=lambda _: None)
    assert summary["precision"] == {"bf16": "bfloat16", "fp16": "float16"}[precision]
    assert summary["device"].startswith("cuda") and summary["peak_memory_mb"] > 0
    assert math.isfinite(summary["best"]["val_loss"])
    texts = ["Stocks rally as oil falls", "The team won the final", "New chip doubles battery life"]
    on_gpu = Classifier.load(tmp_path / "run", device="cuda", precision="fp32").predict_proba(texts)
    on_cpu = Classifier.load(tmp_path / "run", device="cpu", precision="fp32").predict_proba(texts)
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)  # TF32 is off by default in torch's matmuls
