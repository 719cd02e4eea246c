"""``import_deepspeed``: DeepSpeed without its autotuner's mlflow import, mlflow still there."""

import subprocess
import sys

import pytest

CHECK = """
import sys
from rlhf_dist.engine.dist import import_deepspeed
deepspeed = import_deepspeed()
import deepspeed.autotuning.autotuner as autotuner
print(deepspeed.__name__, "mlflow" in sys.modules, autotuner.has_mlflow)
import mlflow
print(mlflow.__name__)
"""


@pytest.mark.slow  # a fresh process importing DeepSpeed (~4 s)
def test_deepspeed_imports_without_mlflow_which_stays_importable():
    pytest.importorskip("mlflow")  # the [test] extra installs it (logging.backend=mlflow)
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["deepspeed", "False", "False", "mlflow"]
