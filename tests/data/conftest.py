"""Fixtures for the data tests: the toy tokenizer (cached in a temp dir) and a word-level
tokenizer with hand-known ids (see data_helpers.py)."""
import pytest

from data_helpers import make_word_tokenizer


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("rlhf_dist_cache")


@pytest.fixture(scope="session")
def toy_tok(toy_cache):
    from rlhf_dist.data import toy_tokenizer

    return toy_tokenizer(cache_dir=str(toy_cache))


@pytest.fixture(scope="session")
def word_tok():
    return make_word_tokenizer()
