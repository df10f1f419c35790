#!/usr/bin/env python
"""Paper 2: ResNet, Inception-ResNet and VGG trained from scratch on Tiny ImageNet.

    python reproductions/paper2_resnet_inception.py --data tiny-imagenet-200.zip --workdir runs/paper2 \
        [--model resnet18 --model inception_resnet ...]

The recipes, the paper's figures, the readings chosen and the flags for the others:
``tiny_keras/recipes/paper2.py`` (shown by ``--help``).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices held back (0 shows them)

from tiny_keras import reproduce  # noqa: E402

if __name__ == "__main__":
    reproduce.run_paper("paper2")
