#!/usr/bin/env python
"""The measured results in ``results/``, beside the papers' figures.

    python tools/results.py table [--json OUT [--overwrite]]  # the papers table, Markdown (and JSON)
    python tools/results.py readme [--check]                   # write (or check) the generated tables
    python tools/results.py publish RUN_FOLDER [--as PAPER/RUN] [--note TEXT] [--overwrite]

``table`` lists every result a paper reports (the rows come from the papers' recipes and
ensembles, ``tiny_keras.recipes``) with ours beside it where a run is published: the
difference, our epochs, the first epoch at which ours reached the paper's figure, the
machine and backend, the training time, and a link to the published folder. Rows not yet
run say what they need, with an estimate of the GPU time (``tiny_keras.published``).
``readme`` writes every table made from ``results/`` where it is shown (:data:`PAGES`):
the papers table alone in README.md, the same with its notes in docs/results.md, and the
localisation table in docs/localization.md. ``publish`` copies a finished run folder's
record (results, recipe, provenance, per-stage histories; never weights) to
``results/<paper>/<run>/``; a localisation run (paper 2's localiser) goes to
``results/<paper>_localization/<run>/`` and into the localisation table; ``--overwrite``
replaces a published run, keeping its ``note.md`` unless ``--note`` gives a new one.
"""
import argparse
import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "results")
# The generated blocks, each between <!-- NAME --> and <!-- /NAME --> in its page (relative to REPO).
PAPERS = "papers-table"  # the papers table alone
PAPERS_FULL = "papers-table-full"  # the papers table and its notes
LOCALIZATION = "localization-table"  # the published localisation runs
PAGES = {PAPERS: "README.md", PAPERS_FULL: "docs/results.md", LOCALIZATION: "docs/localization.md"}


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
    """Every result the papers report, as :class:`tiny_keras.published.Row`, in paper order;
    for a paper that reports none (paper 3), a row for each of its default runs."""
    from tiny_keras import recipes as registry
    from tiny_keras.published import Row

    def downloads(recipe):  # Keras's applications download their weights="imagenet"
        return "its ImageNet weights from Keras's servers" if recipe.model_options.get("weights") == "imagenet" else None

    rows = []
    for paper, entry in registry.PAPERS.items():
        module, title = registry.get(paper), entry.subject
        recipes = module.RECIPES
        default = module.DEFAULT_RUNS or list(recipes)
        reports_none = not any(r.paper_results for r in recipes.values())
        for name, recipe in recipes.items():
            stages = [s.name for s in recipe.stages if s.name in recipe.paper_results]
            if reports_none and name in default:
                stages = [recipe.stages[-1].name]
            for stage in stages:
                images, flops = _training_cost(recipe.to_json()) if with_costs else (None, None)
                rows.append(Row(paper, name, stage, recipe.paper_results.get(stage), title, images, flops,
                                downloads(recipe)))
        for ensemble in module.ENSEMBLES:
            if ensemble.paper_val_top1 is not None:
                images = flops = 0
                if with_costs:
                    for member in ensemble.members:
                        i, f = _training_cost(recipes[member].to_json())
                        images, flops = images + i, flops + f
                rows.append(Row(paper, ensemble.name, "ensemble", ensemble.paper_val_top1, title,
                                images or None, flops or None))
    return rows


def _link_prefix(page):
    """What makes a link relative to the repository one relative to ``page``: "../" in docs/."""
    return "../" * page.count("/")


def generated_blocks(results_dir=RESULTS):
    """``{block: text}``: every block made from ``results_dir``; :data:`PAGES` says where each goes."""
    from tiny_keras import published

    table = published.papers_table(catalogue(), results_dir)
    return {PAPERS: published.markdown(table, notes=False, link_prefix=_link_prefix(PAGES[PAPERS])),
            PAPERS_FULL: published.markdown(table, link_prefix=_link_prefix(PAGES[PAPERS_FULL])),
            LOCALIZATION: published.localization_markdown(results_dir,
                                                          link_prefix=_link_prefix(PAGES[LOCALIZATION]))}


def _markers(block):
    return f"<!-- {block} -->", f"<!-- /{block} -->"


def page_block(text, block):
    """The text now between ``block``'s markers in ``text``, the content of its page."""
    begin, end = _markers(block)
    if begin not in text or end not in text:
        raise SystemExit(f"{PAGES[block]} has no {begin} ... {end} block")
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def _replace_block(text, block, content):
    begin, end = _markers(block)
    before, rest = text.split(begin, 1)
    return f"{before}{begin}\n{content}\n{end}{rest.split(end, 1)[1]}"


def _read(page):
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        return f.read()


def _folder_problem(path):
    """What is wrong with ``path`` as a published results folder to read, or None."""
    if not os.path.exists(path):
        return f"{path}: no such folder; expected a published results folder"
    if not os.path.isdir(path):
        return f"{path} is a file; expected a published results folder"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="print the papers table")
    table.add_argument("--json", metavar="OUT", help="also write it as JSON")
    table.add_argument("--overwrite", action="store_true", help="replace an existing --json OUT")
    table.add_argument("--results", default=RESULTS, help="the published results folder")
    readme = sub.add_parser("readme", help="write the tables made from results/ (README.md, docs/)")
    readme.add_argument("--check", action="store_true", help="only check that those tables are current")
    pub = sub.add_parser("publish", help="copy a finished run's record to results/")
    pub.add_argument("run_folder")
    pub.add_argument("--as", dest="name", metavar="PAPER/RUN", help="default: the recipe's paper / the folder name")
    pub.add_argument("--note", help="what a gap to the paper's figure comes from (shown under the table)")
    pub.add_argument("--results", default=RESULTS)
    pub.add_argument("--overwrite", action="store_true", help="replace a published run of the same name")
    args = parser.parse_args(argv)

    from tiny_keras import files, published

    if args.command == "publish":
        return _publish(args, pub)
    if args.command == "table":
        if args.json and (problem := files.output_problem(args.json, args.overwrite)):
            table.error(f"--json: {problem}")
        if problem := _folder_problem(args.results):
            table.error(f"--results: {problem}")
        try:
            rows = published.papers_table(catalogue(), args.results)
        except files.CorruptFile as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        text = published.markdown(rows)
        print(text)
        if args.json:
            files.write_json(rows, args.json)
            print(f"wrote {args.json}")
        return 0
    if problem := _folder_problem(RESULTS):
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        blocks = generated_blocks(RESULTS)
    except files.CorruptFile as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    pages = {page: _read(page) for page in dict.fromkeys(PAGES.values())}
    stale = [block for block, text in blocks.items()
             if page_block(pages[PAGES[block]], block) != text]  # also: every marker is there
    named = ", ".join(f"{PAGES[block]} ({block})" for block in stale)
    if args.check:
        if stale:
            print(f"{named} differ from results/; run: python tools/results.py readme", file=sys.stderr)
            return 1
        print(f"the tables in {', '.join(pages)} match results/")
        return 0
    for block in stale:
        pages[PAGES[block]] = _replace_block(pages[PAGES[block]], block, blocks[block])
    for page in dict.fromkeys(PAGES[block] for block in stale):
        files.write_text(pages[page], os.path.join(REPO, page))
    print(f"wrote {named}" if stale else f"the tables in {', '.join(pages)} were already current")
    return 0


def _publish(args, parser):
    from tiny_keras import files, published

    paper = run = None
    if args.name is not None:
        parts = args.name.split("/")
        if len(parts) != 2 or not all(published.is_plain_name(part) for part in parts):
            parser.error(f"--as: expected PAPER/RUN, two plain names ({published.PLAIN_NAME}), not {args.name!r}")
        paper, run = parts
    if os.path.exists(args.results) and not os.path.isdir(args.results):
        parser.error(f"--results: {args.results} is a file; expected a folder to publish into")
    if problem := files.output_problem(args.results, overwrite=True, folder=True):
        parser.error(f"--results: {problem}")
    try:
        target = published.publish(args.run_folder, args.results, paper, run, args.overwrite, args.note,
                                   keep_note=True)
    except published.PublishedRunExists as error:
        print(f"error: {error.target} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    except (published.PublishError, files.CorruptFile) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.overwrite and args.note is None and os.path.isfile(os.path.join(target, published.NOTE)):
        print(f"kept {os.path.join(target, published.NOTE)}; pass --note to replace it")
    print(f"published {target}; now run: python tools/results.py readme")
    return 0


if __name__ == "__main__":
    sys.exit(main())
