#!/usr/bin/env python
"""Paper 2, section 4.8: object localisation with a conv encoder and an LSTM box decoder.

    python reproductions/paper2_localization.py --data tiny-imagenet-200.zip --workdir runs/paper2_localization

The recipe, what comes from the paper, TensorBox or us, and the flags:
``tiny_keras/recipes/paper2_localization.py`` (shown by ``--help``).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices held back (0 shows them)

from tiny_keras import reproduce  # noqa: E402

if __name__ == "__main__":
    reproduce.run_paper("paper2_localization")
