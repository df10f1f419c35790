#!/usr/bin/env python
"""The measured results in ``results/``, beside the papers' figures.

    python tools/results.py table [--json OUT]       # the papers table, Markdown (and JSON)
    python tools/results.py readme [--check]          # write (or check) README.md's tables
    python tools/results.py publish RUN_FOLDER [--as PAPER/RUN] [--note TEXT] [--overwrite]

``table`` lists every result a paper reports (the rows come from the reproduction
scripts' recipes and ensembles) with ours beside it where a run is published: the
difference, our epochs, the first epoch at which ours reached the paper's figure, the
machine and backend, the training time, and a link to the published folder. Rows not yet
run say what they need, with an estimate of the GPU time (``tiny_keras.published``).
``publish`` copies a finished run folder's record (results, recipe, provenance, per-stage
histories; never weights) to ``results/<paper>/<run>/``; a localisation run (paper 2's
localiser) goes to ``results/<paper>_localization/<run>/`` and into the README's
localisation table.
"""
import argparse
import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "results")
README = os.path.join(REPO, "README.md")
BEGIN, END = "<!-- papers-table -->", "<!-- /papers-table -->"
LOCALIZATION = "localization-table"  # README block of the published localisation runs


def script(paper):
    from tiny_keras.reproduce import load_script

    return load_script(paper)


@functools.lru_cache(maxsize=None)
def _training_cost(recipe_json):
    from tiny_keras.recipe import Recipe

    return training_cost(Recipe.from_json(recipe_json))


def training_cost(recipe):
    """``(training images, training FLOPs)`` of a recipe, counting 3 forward passes' FLOPs per
    image (forward and backward) at each stage's input size."""
    import keras

    from tiny_keras import models
    from tiny_keras.published import TRAIN_IMAGES

    entry = models.get_entry(recipe.model)
    options = {**recipe.model_options, **entry.offline_options, "num_classes": recipe.num_classes}
    images, flops, per_size = 0, 0.0, {}
    for stage in recipe.stages:
        steps = stage.steps(TRAIN_IMAGES)
        size = stage.image_size or recipe.crop or entry.input_shape[0]
        if size not in per_size:
            per_size[size] = models.forward_flops(models.build(recipe.model, input_shape=(size, size, 3), **options))
            keras.backend.clear_session()
        images += stage.epochs * steps * stage.batch_size
        flops += 3.0 * per_size[size] * stage.epochs * steps * stage.batch_size
    return images, flops


def catalogue(with_costs=True):
    """Every result the papers report, as :class:`tiny_keras.published.Row`, in script order;
    for a paper that reports none (paper 3), a row for each of its default runs."""
    from tiny_keras.published import Row
    from tiny_keras.reproduce import SCRIPTS

    rows = []
    for paper, (_, title) in SCRIPTS.items():
        module = script(paper)
        recipes = module.RECIPES
        default = getattr(module, "DEFAULT_RUNS", list(recipes))
        reports_none = not any(r.paper_results for r in recipes.values())
        for name, recipe in recipes.items():
            stages = [s.name for s in recipe.stages if s.name in recipe.paper_results]
            if reports_none and name in default:
                stages = [recipe.stages[-1].name]
            for stage in stages:
                images, flops = _training_cost(recipe.to_json()) if with_costs else (None, None)
                rows.append(Row(paper, name, stage, recipe.paper_results.get(stage), title, images, flops))
        for ensemble in getattr(module, "ENSEMBLES", ()):
            if ensemble.paper_val_top1 is not None:
                images = flops = 0
                if with_costs:
                    for member in ensemble.members:
                        i, f = _training_cost(recipes[member].to_json())
                        images, flops = images + i, flops + f
                rows.append(Row(paper, ensemble.name, "ensemble", ensemble.paper_val_top1, title,
                                images or None, flops or None))
    return rows


def generated_table(results_dir=RESULTS):
    from tiny_keras import published

    table = published.papers_table(catalogue(), results_dir)
    return table, published.markdown(table)


def _markers(block):
    return (BEGIN, END) if block is None else (f"<!-- {block} -->", f"<!-- /{block} -->")


def readme_block(text, block=None):
    """The papers table (or another generated ``block``) now in README.md's text."""
    begin, end = _markers(block)
    if begin not in text or end not in text:
        raise SystemExit(f"README.md has no {begin} ... {end} block")
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def generated_blocks(results_dir=RESULTS):
    """``{block: text}``: every README block made from ``results_dir`` (None: the papers table)."""
    from tiny_keras import published

    return {None: generated_table(results_dir)[1], LOCALIZATION: published.localization_markdown(results_dir)}


def _replace_block(text, block, content):
    begin, end = _markers(block)
    before, rest = text.split(begin, 1)
    return f"{before}{begin}\n{content}\n{end}{rest.split(end, 1)[1]}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="print the papers table")
    table.add_argument("--json", metavar="OUT", help="also write it as JSON")
    table.add_argument("--results", default=RESULTS, help="the published results folder")
    readme = sub.add_parser("readme", help="write README.md's papers table from results/")
    readme.add_argument("--check", action="store_true", help="only check that README.md's table is current")
    pub = sub.add_parser("publish", help="copy a finished run's record to results/")
    pub.add_argument("run_folder")
    pub.add_argument("--as", dest="name", metavar="PAPER/RUN", help="default: the recipe's paper / the folder name")
    pub.add_argument("--note", help="what a gap to the paper's figure comes from (shown under the table)")
    pub.add_argument("--results", default=RESULTS)
    pub.add_argument("--overwrite", action="store_true", help="replace a published run of the same name")
    args = parser.parse_args(argv)

    from tiny_keras import files, published

    if args.command == "publish":
        paper, run = args.name.split("/", 1) if args.name else (None, None)
        try:
            target = published.publish(args.run_folder, args.results, paper, run, args.overwrite, args.note)
        except published.PublishError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"published {target}; now run: python tools/results.py readme")
        return 0
    if args.command == "table":
        rows = published.papers_table(catalogue(), args.results)
        text = published.markdown(rows)
        print(text)
        if args.json:
            files.write_json(rows, args.json)
            print(f"wrote {args.json}")
        return 0
    with open(README, encoding="utf-8") as f:
        current = f.read()
    blocks = generated_blocks()
    if args.check:
        stale = [block or "papers-table" for block, text in blocks.items() if readme_block(current, block) != text]
        if stale:
            print(f"README.md's {', '.join(stale)} differ from results/; run: python tools/results.py readme",
                  file=sys.stderr)
            return 1
        print("README.md's tables match results/")
        return 0
    for block, text in blocks.items():
        readme_block(current, block)  # both markers present, or a clear error before writing
        current = _replace_block(current, block, text)
    files.write_text(current, README)
    print("wrote README.md's papers and localisation tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
