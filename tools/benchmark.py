#!/usr/bin/env python
"""Speed benchmarks that print numbers.

    python tools/benchmark.py data    --data PATH [--json OUT]
    python tools/benchmark.py generator --data PATH [--json OUT]
    python tools/benchmark.py augment [--paper P ...] [--json OUT]
    python tools/benchmark.py train   [--model NAME ...] [--steps-per-execution N ...] [--json OUT]
    python tools/benchmark.py pipeline [--data PATH] [--json OUT]
    python tools/benchmark.py evaluate [--paper P ...] [--json OUT]

Each subcommand prints a table and, with ``--json OUT``, writes its numbers as JSON.
Bad flags exit with status 2, bad data with 1, each with one line (``--debug``: the traceback).
"""
import argparse
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SUBCOMMANDS = {
    "data": ("tiny_keras.benchmarks.data", "decode-and-cache time and cached epoch throughput"),
    "generator": ("tiny_keras.benchmarks.generator", "paper 1's augmentation: ours vs ImageDataGenerator"),
    "augment": ("tiny_keras.benchmarks.augment", "device-side augmentation's share of a train step, per paper"),
    "train": ("tiny_keras.benchmarks.train", "the training engine against a bare model.fit, synthetic data"),
    "pipeline": ("tiny_keras.benchmarks.pipeline", "host input images/s per core, device- vs host-side augmentation"),
    "evaluate": ("tiny_keras.benchmarks.evaluate", "evaluation images/s per test-time augmentation, per paper"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    module = None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the benchmark that runs
            module = importlib.import_module(module_name)
            p.add_argument("--json", metavar="OUT", help="also write the numbers to this JSON file")
            p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
            p.add_argument("--debug", action="store_true",
                           help="show the full traceback of an error (bad data) instead of its one line")
            module.add_arguments(p)
    args = parser.parse_args(argv)
    subparser = sub.choices[args.command]
    if hasattr(module, "check_arguments"):
        module.check_arguments(subparser, args)
    from tiny_keras import files

    if args.json and (problem := files.output_problem(args.json, overwrite=args.overwrite)):
        subparser.error(f"--json: {problem}")
    try:
        result = module.run(args)
    except input_errors() as error:
        if args.debug:
            raise
        from tiny_keras.reproduce import describe_input_error  # the scripts' one line for bad data

        print(f"error: {describe_input_error(error, getattr(args, 'data', None))}", file=sys.stderr)
        return 1
    if args.json:
        files.write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def input_errors():
    """What bad data raises once a benchmark reads it: printed as one line, exit status 1."""
    from tiny_keras.benchmarks import InputError
    from tiny_keras.data.layout import DatasetError
    from tiny_keras.download import DownloadError

    return DatasetError, DownloadError, InputError


if __name__ == "__main__":
    sys.exit(main())
