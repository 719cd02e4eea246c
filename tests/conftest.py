"""Test-wide environment: nothing touches the network, W&B runs offline; the toy tokenizer
trained into a temporary cache (``toy_tok``)."""
import os

import pytest

pytest_plugins = ["ceiling"]  # tests/ceiling.py: the per-test time ceilings

for key, value in {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("rlhf_dist_cache")


@pytest.fixture(scope="session")
def toy_tok(toy_cache):
    from rlhf_dist.toy import toy_tokenizer

    return toy_tokenizer(cache_dir=str(toy_cache))

