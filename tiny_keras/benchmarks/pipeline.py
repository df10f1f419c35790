"""The host's share of training: input pipeline throughput per paper, per CPU core.

For every paper's main model (the first stage of its reproduction script's recipe: batch
size and augmentation), on the same images:

- ``device aug``: what training feeds the model now, ``make_dataset(split)``: shuffled
  indices, gathered uint8 batches, prefetched; augmentation runs in the model, on the
  device. Target: 50,000 images/s per core;
- ``host aug``: the same stream with the recipe's augmentation applied on the host
  (``make_dataset(split, augment=...)``, float32 batches), as training did before.

Images/s per core divides by the cores this process may use. Synthetic uint8 images by
default (``--images``), or the training split of ``--data``.
"""
import os
import time

from tiny_keras import augment, data, provenance
from tiny_keras.benchmarks.train import add_paper_arguments, main_recipes, print_table, synthetic_split
from tiny_keras.flags import positive_int, positive_number


def add_arguments(parser):
    parser.add_argument("--data", default=None, help="tiny-imagenet-200.zip or its folder (default: synthetic)")
    parser.add_argument("--images", type=positive_int, default=20000, help="synthetic images (without --data)")
    parser.add_argument("--seconds", type=positive_number, default=3.0, help="time each pipeline at least this long")
    add_paper_arguments(parser, widths=False)


def _rate(ds, seconds):
    """Images/s of ``ds`` (repeated), after one warm-up batch."""
    iterator = iter(ds)
    next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += int(next(iterator)[0].shape[0])
    return count / (time.perf_counter() - start)


def run(args):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    split = (data.load_split(args.data, "train", progress=False) if args.data
             else synthetic_split(args.images, "train"))
    results = {"machine": provenance.environment().get("machine"), "cores": cores, "images": len(split),
               "source": args.data or "synthetic", "papers": {}}
    for paper, _, recipe in main_recipes(args):  # the stage's batch and augmentation (any width)
        stage = recipe.stages[0]
        device = _rate(data.make_dataset(split, batch_size=stage.batch_size, repeat=True), args.seconds)
        transform = augment.deserialize(stage.augment) if stage.augment else None
        host = _rate(data.make_dataset(split, batch_size=stage.batch_size, repeat=True, augment=transform),
                     args.seconds)
        results["papers"][paper] = {"model": recipe.model, "batch_size": stage.batch_size,
                                    "device_aug_images_per_s_per_core": round(device / cores, 1),
                                    "host_aug_images_per_s_per_core": round(host / cores, 1)}
        print(f"{paper}: {device / cores:,.0f} images/s per core with device-side augmentation, "
              f"{host / cores:,.0f} with host augmentation", flush=True)
    print()
    print_table([("paper", 8, "s"), ("model", 18, "s"), ("batch", 6, "d"), ("device aug (img/s/core)", 26, ",.0f"),
                 ("host aug (img/s/core)", 24, ",.0f")],
                [(paper, row["model"], row["batch_size"], row["device_aug_images_per_s_per_core"],
                  row["host_aug_images_per_s_per_core"]) for paper, row in results["papers"].items()])
    print(f"\n{cores} cores; {results['images']:,} {results['source']} images")
    return results
