"""Benchmarks behind ``tools/benchmark.py``: each module has ``add_arguments(parser)``
and ``run(args) -> dict`` and prints its own numbers; ``check_arguments(parser, args)``,
where a module has one, refuses values no type can judge alone, before anything runs."""


class InputError(ValueError):
    """Data a benchmark cannot measure with the flags given (fewer images than one batch),
    found once read: ``tools/benchmark.py`` prints the message, which names the flag, as one
    line and exits with status 1."""


def at_least(parser, args, flag, minimum, why=""):
    """``parser.error`` unless ``args``' value of ``flag`` (``"--epochs"``) is at least ``minimum``."""
    value = getattr(args, flag[2:].replace("-", "_"))
    if value is not None and not value >= minimum:
        parser.error(f"{flag} must be at least {minimum}{why}. Received: {value}")
