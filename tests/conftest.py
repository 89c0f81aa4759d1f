"""Shared fixtures: small synthetic corpora, written once per test session.

The voices come from :mod:`classifier.synthetic`, so every fixture is the
same bytes on every run and every speaker's gender is known.
"""
from pathlib import Path

import pytest

from classifier.synthetic import write_audiomnist, write_labelled_folder


@pytest.fixture(scope="session")
def synthetic_audiomnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/`` dir of an AudioMNIST-layout corpus: 6 women + 6 men (interleaved,
    01 is male), digits 0-9, 2 takes each, 48 kHz 16-bit mono, with
    ``audioMNIST_meta.txt``."""
    root = tmp_path_factory.mktemp("audiomnist")
    return write_audiomnist(root, n_female=6, n_male=6, repetitions=2, seed=0)


@pytest.fixture(scope="session")
def synthetic_labelled_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat folder of 20 clips named ``clip_KKK_<gender>.wav`` (10 per gender), 16 kHz."""
    root = tmp_path_factory.mktemp("labelled")
    return write_labelled_folder(root, n_clips=20, seed=0)
