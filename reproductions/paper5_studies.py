#!/usr/bin/env python
"""Paper 5's regularisation study: L2 weight decay with and without dropout, 8-layer CNN.

    python reproductions/paper5_studies.py --data tiny-imagenet-200.zip [--workdir runs/paper5_l2_dropout] \
        [--model wd_5e-4_dropout_0.5 --model wd_5e-4_no_dropout ...]

The recipes, the paper's figures, the readings chosen and the flags for the others:
``tiny_keras/recipes/paper5_studies.py`` (shown by ``--help``).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices held back (0 shows them)

from tiny_keras import reproduce  # noqa: E402

if __name__ == "__main__":
    reproduce.run_paper("paper5_studies")
