"""The argparse types the command lines share (the reproduction scripts, the papers' own
flags, the tools): each turns a bad value into argparse's one line, which names the flag."""
import argparse
import math


def positive_int(text):
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text.strip().lstrip("+"):
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1. Received: {text!r}")
    return value


def whole_number(low, high=None, note=""):
    """An argparse type: a whole number from ``low`` (to ``high``, if given)."""
    expected = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a whole number {expected}{note}. Received: {text!r}")
        return value

    return parse


def _float(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def positive_number(text):
    """An argparse type: a number above 0 (a learning rate, a loss weight)."""
    value = _float(text)
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0. Received: {text!r}")
    return value


def non_negative_number(text):
    """An argparse type: a number of at least 0 (a regularisation factor)."""
    value = _float(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0. Received: {text!r}")
    return value


def rate(text):
    """An argparse type: a number from 0 up to, not including, 1 (a dropout rate)."""
    value = _float(text)
    if value is None or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 up to (not including) 1. Received: {text!r}")
    return value
