"""Device-side augmentation's cost: the share of a train step each paper's augmentation takes.

For every paper's main model, trained with the first stage of its reproduction script's
recipe (batch size, optimizer, preprocessing, crop), a bare ``model.fit`` on synthetic
uint8 images times training steps twice in alternating rounds: the model with the recipe's
augmentation (its ``augmenter``, run inside the train step) and the same model without
it. The cost is ``1 - (step time without) / (step time with)``. By default the models are
the registry's small variants (``--full-width``: the papers' own widths), so a CPU can
run all five; a smaller network makes the augmentation's share larger, not smaller.
"""
import dataclasses

from tiny_keras import provenance
from tiny_keras.benchmarks import at_least
from tiny_keras.benchmarks.train import add_paper_arguments, bare_fit, main_recipes, print_table, synthetic_split
from tiny_keras.flags import positive_int


def add_arguments(parser):
    add_paper_arguments(parser)
    parser.add_argument("--steps", type=positive_int, default=20, help="training steps per timed epoch")
    parser.add_argument("--epochs", type=positive_int, default=3, help="epochs per measurement (the first is warm-up)")
    parser.add_argument("--rounds", type=positive_int, default=2, help="alternating rounds (the best is reported)")


def check_arguments(parser, args):
    at_least(parser, args, "--steps", 2, " (a timed epoch runs from its first step to its last)")
    at_least(parser, args, "--epochs", 2, " (the first is warm-up)")


def run(args):
    results = {"machine": provenance.environment().get("machine"), "full_width": args.full_width, "papers": {}}
    for paper, name, recipe in main_recipes(args):
        plain = recipe.replace(stages=[dataclasses.replace(recipe.stages[0], augment=None)])
        batch = recipe.stages[0].batch_size
        splits = {"train": synthetic_split(batch * args.steps, "train")}
        with_aug, without = [], []
        for r in range(args.rounds):
            with_aug.append(bare_fit(recipe, splits, args.steps, args.epochs))
            without.append(bare_fit(plain, splits, args.steps, args.epochs))
            print(f"{paper} round {r + 1}: {with_aug[-1]:.2f} steps/s augmenting, {without[-1]:.2f} without",
                  flush=True)
        step_with, step_without = 1000 / max(with_aug), 1000 / max(without)
        results["papers"][paper] = {"model": name, "batch_size": batch, "step_ms_with": round(step_with, 2),
                                    "step_ms_without": round(step_without, 2),
                                    "augmentation_share_percent": round(100 * (1 - step_without / step_with), 1)}
    print()
    print_table([("paper", 8, "s"), ("model", 18, "s"), ("batch", 6, "d"), ("step ms, augmenting", 21, ".1f"),
                 ("step ms, without", 18, ".1f"), ("share %", 9, ".1f")],
                [(paper, row["model"], row["batch_size"], row["step_ms_with"], row["step_ms_without"],
                  row["augmentation_share_percent"]) for paper, row in results["papers"].items()])
    return results
