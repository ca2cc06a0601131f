"""Shared fixtures: a tiny synthetic digits dataset written once per session (real COCO JSON + PNG)."""

import pytest

from attnlab.detr.synthetic import make_synthetic

TINY_MODEL = {"d_model": 32, "n_heads": 4, "ffn_dim": 64, "num_queries": 8, "backbone_channels": [16, 16, 32]}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    make_synthetic(root, "synthetic-digits", seed=0, n_train=24, n_val=8, image_size=32, min_size=10, max_size=14)
    return root
