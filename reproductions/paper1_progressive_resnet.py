#!/usr/bin/env python
"""Paper 1: progressive resizing of a ResNet on Tiny ImageNet, finished with a cyclic learning rate.

    python reproductions/paper1_progressive_resnet.py --data tiny-imagenet-200.zip --workdir runs/paper1

The recipes, the paper's figures, the readings chosen and the flags for the others:
``tiny_keras/recipes/paper1.py`` (shown by ``--help``).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices held back (0 shows them)

from tiny_keras import reproduce  # noqa: E402

if __name__ == "__main__":
    reproduce.run_paper("paper1")
