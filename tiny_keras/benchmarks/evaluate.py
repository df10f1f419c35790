"""Evaluation speed: images per second through ``tiny_keras.evaluate`` with each test-time augmentation.

For every paper's main model, built as the first stage of its reproduction script's recipe
builds it (the ``ImageClassifier`` with its preprocessing and crop; untrained weights, which
do not change the speed), ``evaluate.Member.predict`` scores synthetic uint8 images with
``tta`` "none", "flip" and "crops10", in rounds; the first round compiles (a tf.function on
TensorFlow, ``jax.jit`` on JAX; PyTorch runs eagerly) and is left out, the best of the others
is reported. By default the models are the registry's small variants (``--full-width``: the
papers' own widths). Runs on whichever Keras backend the process has; the results name it.
"""
import time

from tiny_keras import evaluate, provenance
from tiny_keras.engine.model import stage_model
from tiny_keras.benchmarks import at_least
from tiny_keras.benchmarks.train import add_paper_arguments, main_recipes, print_table, synthetic_split
from tiny_keras.flags import positive_int


def add_arguments(parser):
    add_paper_arguments(parser)
    parser.add_argument("--images", type=positive_int, default=512, help="images scored per round")
    parser.add_argument("--batch-size", type=positive_int, default=256,
                        help="network inputs per step (evaluate's default)")
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="rounds per mode (the first compiles and is left out)")


def check_arguments(parser, args):
    at_least(parser, args, "--rounds", 2, " (the first compiles)")


def run(args):
    environment = provenance.environment()
    results = {"backend": environment["backend"], "machine": environment["machine"], "full_width": args.full_width,
               "images": args.images, "batch_size": args.batch_size, "papers": {}}
    print(f"Keras backend: {environment['backend']}; {provenance.describe_machine(environment)}", flush=True)
    images = synthetic_split(args.images, "val", seed=2).images
    for paper, name, recipe in main_recipes(args):
        model = stage_model(recipe, recipe.stages[0], 0, train_images=images)
        member = evaluate.Member(f"<{name}>", "keras", int(model.outputs[0].shape[-1]), model=model)
        row = {"model": name}
        for tta in evaluate.TTA_MODES:
            seconds = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                member.predict(images, tta=tta, batch_size=args.batch_size)
                seconds.append(time.perf_counter() - start)
            row[f"{tta}_images_per_s"] = round(args.images / min(seconds[1:]), 1)
            row[f"{tta}_first_round_s"] = round(seconds[0], 2)
            print(f"{paper} tta={tta}: {row[f'{tta}_images_per_s']:.1f} images/s "
                  f"(first round, compiling: {seconds[0]:.1f} s)", flush=True)
        results["papers"][paper] = row
    print()
    print_table([("paper", 8, "s"), ("model", 18, "s")]
                + [(f"{tta} images/s", 19, ".1f") for tta in evaluate.TTA_MODES],
                [(paper, row["model"], *[row[f"{tta}_images_per_s"] for tta in evaluate.TTA_MODES])
                 for paper, row in results["papers"].items()])
    return results
