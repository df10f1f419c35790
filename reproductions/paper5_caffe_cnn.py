#!/usr/bin/env python
"""Paper 5: an 8-layer Caffe-style CNN, its regularisation, and model/snapshot ensembles.

    python reproductions/paper5_caffe_cnn.py --data tiny-imagenet-200.zip --workdir runs/paper5

The recipes, the paper's figures, the readings chosen and the flags for the others:
``tiny_keras/recipes/paper5.py`` (shown by ``--help``).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices held back (0 shows them)

from tiny_keras import reproduce  # noqa: E402

if __name__ == "__main__":
    reproduce.run_paper("paper5")
