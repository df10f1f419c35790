#!/usr/bin/env python
"""Paper 3: VGG-style networks with small (1x1, 2x1, 1x2, 2x2) filters, and InceptionV3-lite.

    python reproductions/paper3_vgg.py --data tiny-imagenet-200.zip --workdir runs/paper3

The recipes, the paper's figures, the readings chosen and the flags for the others:
``tiny_keras/recipes/paper3.py`` (shown by ``--help``).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices held back (0 shows them)

from tiny_keras import reproduce  # noqa: E402

if __name__ == "__main__":
    reproduce.run_paper("paper3")
