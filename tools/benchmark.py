#!/usr/bin/env python
"""Speed benchmarks that print numbers.

    python tools/benchmark.py data    --data PATH [--json OUT]
    python tools/benchmark.py generator --data PATH [--json OUT]
    python tools/benchmark.py augment [--paper P ...] [--json OUT]
    python tools/benchmark.py train   [--model NAME ...] [--steps-per-execution N ...] [--json OUT]
    python tools/benchmark.py pipeline [--data PATH] [--json OUT]
    python tools/benchmark.py evaluate [--paper P ...] [--json OUT]

Each subcommand prints a table and, with ``--json OUT``, writes its numbers as JSON.
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
            module.add_arguments(p)
    args = parser.parse_args(argv)
    if args.json and os.path.exists(args.json) and not args.overwrite:
        parser.error(f"--json: {args.json} exists; pass --overwrite to replace it")
    result = module.run(args)
    if args.json:
        from tiny_keras import files

        files.write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
