#!/usr/bin/env python
"""Paper 4: four simple CNNs and ResNet50 transfer learning on Tiny ImageNet.

    python reproductions/paper4_cnn_transfer.py --data tiny-imagenet-200.zip --workdir runs/paper4 \
        [--model model1 ... --model model5] [--weights imagenet|none|PATH]

The recipes, the paper's figures, the readings chosen and the flags for the others:
``tiny_keras/recipes/paper4.py`` (shown by ``--help``).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices held back (0 shows them)

from tiny_keras import reproduce  # noqa: E402

if __name__ == "__main__":
    reproduce.run_paper("paper4")
