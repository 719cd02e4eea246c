"""Fixtures for the data tests: a word-level tokenizer with hand-known ids (see
data_helpers.py); the toy tokenizer is tests/conftest.py's ``toy_tok``."""

import pytest

from data_helpers import make_word_tokenizer


@pytest.fixture(scope="session")
def word_tok():
    return make_word_tokenizer()
