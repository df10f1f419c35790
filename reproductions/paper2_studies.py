#!/usr/bin/env python
"""Paper 2's ResNet studies: weight decay, initialisation, depth and width.

    python reproductions/paper2_studies.py --study weight_decay --data tiny-imagenet-200.zip \
        [--workdir runs/paper2_weight_decay] [--model wd_1e-4 --model wd_3e-4 ...]

The recipes, the paper's figures, the readings chosen and the flags for the others:
``tiny_keras/recipes/paper2_studies.py`` (shown by ``--help``).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices held back (0 shows them)

from tiny_keras import reproduce  # noqa: E402

if __name__ == "__main__":
    reproduce.run_paper("paper2_studies")
