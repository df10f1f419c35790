#!/usr/bin/env python
"""Where runs stand: the stage and epoch reached, the last and best validation score,
the pace and the time left at it, the sessions that trained them, and the command that
continues each unfinished one.

    python tools/status.py PATH [PATH ...] [--json OUT [--overwrite]]

PATH is a run folder, or a reproduction's workdir (``--workdir``: every run folder in it).
It only reads files, so it can watch a run that trains in the background. The logic lives
in ``tiny_keras.status``.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run folder or reproduction workdir")
    parser.add_argument("--json", metavar="OUT", help="also write the statuses to this JSON file (a list)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    from tiny_keras import files, runs, status

    if args.json and (problem := files.output_problem(args.json, args.overwrite)):
        parser.error(f"--json: {problem}")
    folders = []
    for path in args.paths:
        found = status.run_folders(path)
        if not found:
            what = ("no such file or folder" if not os.path.exists(path)
                    else "no run folder here (none holds recipe.json)")
            parser.error(f"{path}: {what}; expected a run folder or a reproduction's --workdir")
        folders += found
    try:
        statuses = [status.read_status(folder) for folder in folders]
    except (files.CorruptFile, runs.RunRecordError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(status.format_status(s) for s in statuses))
    if args.json:
        files.write_json(statuses, args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
