"""Data layer: decode-and-cache time for the training set, and cached epoch throughput."""
import shutil
import tempfile
import time

from tiny_keras import data
from tiny_keras.benchmarks import InputError
from tiny_keras.flags import positive_int


def add_arguments(parser):
    parser.add_argument("--data", required=True, help="tiny-imagenet-200.zip or its folder")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--epochs", type=positive_int, default=2, help="cached epochs to time (the best is reported)")
    parser.add_argument("--per-class", type=positive_int, default=None, help="limit images per class (quick runs)")


def run(args):
    cache_dir = tempfile.mkdtemp(prefix="tiny_keras_bench_")
    try:
        start = time.perf_counter()
        split = data.load_split(args.data, "train", per_class=args.per_class, cache_dir=cache_dir)
        decode_seconds = time.perf_counter() - start
        if len(split) < args.batch_size:
            limit = f" at --per-class {args.per_class}" if args.per_class else ""
            raise InputError(f"--batch-size {args.batch_size}: the training split of --data has {len(split)} images"
                             f"{limit}, fewer than one batch; pass a smaller --batch-size")
        ds = data.make_dataset(split, batch_size=args.batch_size)
        rates = []
        for epoch in range(args.epochs):
            start, count = time.perf_counter(), 0
            for images, _ in ds:
                count += int(images.shape[0])
            rates.append(count / (time.perf_counter() - start))
            print(f"epoch {epoch + 1}: {count} images, {rates[-1]:,.0f} images/s")
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    result = {
        "images": len(split),
        "decode_cache_seconds": round(decode_seconds, 2),
        "cached_epoch_img_per_s": round(max(rates), 1),
    }
    print()
    print(f"{'training images':<32}{result['images']:>12,}")
    print(f"{'decode + cache (s)':<32}{result['decode_cache_seconds']:>12.2f}")
    print(f"{'cached epoch (images/s)':<32}{result['cached_epoch_img_per_s']:>12,.0f}")
    return result
