"""The Tiny ImageNet data layer: layout reading, decoding, caching, pipelines, TFDS, verify CLI."""
import hashlib
import io
import json
import os
import shutil
import textwrap
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import (
    REPO,
    CLASS_COLOURS,
    CLASS_GRAYS,
    FIXTURE_WNIDS,
    GRAY_TRAIN_FILE,
    TEST_IMAGES,
    TRAIN_PER_CLASS,
    VAL_PER_CLASS,
    requires_real_data,
    run_python,
    write_fixture,
    zip_folder,
)
from tiny_keras import data
from tiny_keras.data import DatasetError, TinyImageNet, decode

SORTED = sorted(FIXTURE_WNIDS)
N_CLASSES = len(FIXTURE_WNIDS)


def mean_colour_label(image):
    """The class whose colour (or gray level, for a gray image) is nearest to the image's median colour."""
    colour = np.median(image.reshape(-1, 3), axis=0)
    if np.ptp(colour) < 5:
        return int(np.argmin(np.abs(CLASS_GRAYS.astype(float) - colour[0])))
    return int(np.argmin(np.abs(CLASS_COLOURS.astype(float) - colour).sum(axis=1)))


# -- layout and labels ------------------------------------------------------------------
@pytest.fixture(params=["folder", "zip", "parent_folder", "folder_with_zip"])
def source(request, fixture_root, fixture_zip):
    return {
        "folder": fixture_root,
        "zip": fixture_zip,
        "parent_folder": fixture_root.parent,  # a folder holding tiny-imagenet-200/
        "folder_with_zip": fixture_zip.parent,  # a folder holding tiny-imagenet-200.zip
    }[request.param]


def test_records_counts_labels_boxes(source):
    ds = TinyImageNet(source)
    assert list(ds.classes.wnids) == SORTED
    train, val, test = ds.records("train"), ds.records("val"), ds.records("test")
    assert len(train) == TRAIN_PER_CLASS * N_CLASSES
    assert len(val) == VAL_PER_CLASS * N_CLASSES
    assert len(test) == TEST_IMAGES
    for r in train + val:
        assert r.label == SORTED.index(r.wnid)
        assert ds.classes.wnid(r.label) == r.wnid
    assert all(r.label == -1 and r.bbox == data.NO_BOX for r in test)
    # Boxes come from <wnid>_boxes.txt and val_annotations.txt exactly as written.
    r = next(r for r in train if r.file_name == "n01641577_2.JPEG")
    assert r.bbox == (2, 3, 42, 52) and r.label == 2
    r = next(r for r in val if r.file_name == "val_4.JPEG")
    assert r.wnid == FIXTURE_WNIDS[4 % 3] and r.bbox == (4, 8, 34, 44)


def test_class_names_lookups(fixture_root):
    classes = TinyImageNet(fixture_root).classes
    assert classes.index("n01641577") == 2  # last in sorted order, first in wnids.txt
    assert classes.wnid(0) == "n01443537"
    assert classes.name(0) == "goldfish"
    assert classes.name("n01629819", short=False) == "European fire salamander, Salamandra salamandra"
    with pytest.raises(KeyError, match="n00000000"):
        classes.index("n00000000")
    official = data.official_classes()
    assert len(official) == 200 and official.wnid(0) == "n01443537" and official.name(199) == "acorn"
    assert official.wnids == tuple(sorted(official.wnids))


def test_decoded_pixels_channels_and_labels(source):
    split = data.load_split(source, "train", cache="memory", progress=False)
    assert split.images.shape == (TRAIN_PER_CLASS * N_CLASSES, 64, 64, 3) and split.images.dtype == np.uint8
    # Every image's colour says which class it was drawn as: no label shift anywhere.
    assert [mean_colour_label(im) for im in split.images] == list(split.labels)
    gray = [f for f, g in zip(split.files, split.grayscale) if g]
    assert gray == [GRAY_TRAIN_FILE]
    im = split.images[split.files.index(GRAY_TRAIN_FILE)]
    assert np.array_equal(im[..., 0], im[..., 1]) and np.array_equal(im[..., 0], im[..., 2])
    val = data.load_split(source, "val", cache="memory", progress=False)
    assert [mean_colour_label(im) for im in val.images] == list(val.labels)
    assert val.wnids == [FIXTURE_WNIDS[int(f[4:-5]) % 3] for f in val.files]


def test_decoder_matches_pil_exactly(fixture_root):
    """The package's decoder gives PIL's pixels (what keras.utils.load_img gives)."""
    path = fixture_root / "train" / "n01443537" / "images" / "n01443537_0.JPEG"
    ours = decode.decode_jpeg(path.read_bytes()).numpy()
    pil = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(ours, pil)


def _jpeg(array, mode, **options):
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="JPEG", **options)
    return buf.getvalue()


def _test_pattern(channels, seed=0):
    """Noise over gradients: every DCT coefficient and chroma plane gets work to do."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 180, 64)
    base = rng.integers(0, 75, (64, 64, channels)) + ramp[None, :, None] * np.linspace(0.3, 1, channels)
    return np.clip(base, 0, 255).astype(np.uint8).squeeze()


@pytest.mark.parametrize("quality", [30, 75, 95])
@pytest.mark.parametrize("mode,subsampling", [("RGB", 0), ("RGB", 1), ("RGB", 2), ("L", None), ("CMYK", 0),
                                              ("CMYK", 2)])
def test_pillow_decoder_gives_tensorflows_pixels(mode, subsampling, quality):
    """Pillow's decode equals TensorFlow's INTEGER_ACCURATE one exactly: RGB at 4:4:4, 4:2:2 and
    4:2:0, grayscale (repeated to 3 channels), CMYK with black (TensorFlow's conversion)."""
    array = _test_pattern({"RGB": 3, "L": 1, "CMYK": 4}[mode], seed=quality)
    options = {"quality": quality} if subsampling is None else {"quality": quality, "subsampling": subsampling}
    contents = _jpeg(array, mode, **options)
    pillow, channels = decode.decode_jpeg_pillow(contents)
    expected = decode.decode_jpeg(contents).numpy()
    assert pillow.dtype == np.uint8 and pillow.shape == (64, 64, 3)
    assert np.array_equal(pillow, expected)
    assert channels == int(tf.io.extract_jpeg_shape(contents)[2]) == {"RGB": 3, "L": 1, "CMYK": 4}[mode]


@pytest.mark.parametrize("decoder", ["tensorflow", "pillow"])
def test_load_split_with_either_decoder(fixture_zip, decoder):
    ours = data.load_split(fixture_zip, "train", cache="memory", progress=False, decoder=decoder)
    reference = data.load_split(fixture_zip, "train", cache="memory", progress=False, decoder="tensorflow")
    assert np.array_equal(ours.images, reference.images) and ours.files == reference.files
    assert [f for f, g in zip(ours.files, ours.grayscale) if g] == [GRAY_TRAIN_FILE]
    assert data.default_decoder() == "tensorflow"  # the suite runs on the TensorFlow backend
    with pytest.raises(ValueError, match=r"decoder must be one of \('tensorflow', 'pillow'\).*decoder='PIL'"):
        data.load_split(fixture_zip, "val", cache="memory", progress=False, decoder="PIL")


def test_reorganised_val_folders(tmp_path):
    root = write_fixture(tmp_path, reorganised_val=True)
    ds = TinyImageNet(root)
    val = ds.records("val")
    assert len(val) == VAL_PER_CLASS * N_CLASSES
    assert all(r.label == SORTED.index(r.wnid) for r in val)
    r = next(r for r in val if r.file_name == "val_4.JPEG")
    assert r.wnid == FIXTURE_WNIDS[1] and r.bbox == (4, 8, 34, 44)
    decoded = data.load_split(root, "val", cache="memory", progress=False)
    assert [mean_colour_label(im) for im in decoded.images] == list(decoded.labels)


def test_subset_and_per_class(fixture_zip):
    split = data.load_split(fixture_zip, "train", classes=["n01641577"], per_class=2, cache="memory", progress=False)
    assert list(split.labels) == [2, 2]  # labels keep their full-dataset index
    assert split.files == ["n01641577_0.JPEG", "n01641577_1.JPEG"]
    split = data.load_split(fixture_zip, "train", classes=2, per_class=3, cache="memory", progress=False)
    assert sorted(set(split.labels)) == [0, 1] and len(split) == 6
    with pytest.raises(ValueError, match="no train images match"):
        data.load_split(fixture_zip, "train", classes=["n09999999"], cache="memory", progress=False)


# -- cache --------------------------------------------------------------------------------
def test_cache_reused_then_rebuilt_when_source_changes(fixture_copy, tmp_path, capsys):
    cache = tmp_path / "cache"
    first = data.load_split(fixture_copy, "val", cache_dir=cache)
    assert "Decoding 6 val images" in capsys.readouterr().out
    entries = os.listdir(cache)
    assert len(entries) == 1 and isinstance(first.images, np.memmap)
    again = data.load_split(fixture_copy, "val", cache_dir=cache)
    assert "Using cached val images" in capsys.readouterr().out
    assert np.array_equal(again.images, first.images) and again.files == first.files
    # Change one image: its new pixels must come through, from a new cache entry.
    target = fixture_copy / "val" / "images" / "val_0.JPEG"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(target, format="JPEG")
    os.utime(target, ns=(1, 1))
    changed = data.load_split(fixture_copy, "val", cache_dir=cache)
    assert "Decoding 6 val images" in capsys.readouterr().out
    assert len(os.listdir(cache)) == 2
    assert changed.images[changed.files.index("val_0.JPEG")].max() == 0


def test_interrupted_cache_write_leaves_nothing(fixture_root, tmp_path, monkeypatch):
    from tiny_keras.data import arrays

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(arrays.np, "savez", fail)
    with pytest.raises(KeyboardInterrupt):
        data.load_split(fixture_root, "val", cache_dir=tmp_path, progress=False)
    assert os.listdir(tmp_path) == []


# Run on JAX in a process where importing TensorFlow or TFDS fails. Only tiny_keras.data is
# imported (the package's __init__ is replaced by an empty module): this checks the data layer.
_WITHOUT_TENSORFLOW = """
import sys, types
sys.modules["tensorflow"] = None
sys.modules["tensorflow_datasets"] = None
package = types.ModuleType("tiny_keras")
package.__path__ = [{package!r}]
sys.modules["tiny_keras"] = package
import keras, numpy as np
import tiny_keras.data as data
from tiny_keras.backend import TensorFlowRequired
assert keras.backend.backend() == "jax" and data.default_decoder() == "pillow"
"""


def test_data_without_tensorflow_shares_the_cache(fixture_zip, tmp_path):
    """On JAX with no TensorFlow: import, decode with Pillow, batch; the cache entries written
    there are read by TensorFlow's path and the other way round (same pixels, same key)."""
    cache = tmp_path / "cache"
    val_tf = data.load_split(fixture_zip, "val", cache_dir=cache, progress=False)  # TensorFlow writes val
    np.save(tmp_path / "val_tf.npy", np.asarray(val_tf.images))
    script = _WITHOUT_TENSORFLOW.format(package=str(REPO / "tiny_keras")) + textwrap.dedent(f"""
        val = data.load_split({str(fixture_zip)!r}, "val", cache_dir={str(cache)!r})  # Pillow reads TensorFlow's
        assert np.array_equal(val.images, np.load({str(tmp_path / "val_tf.npy")!r}))
        train = data.load_split({str(fixture_zip)!r}, "train", cache_dir={str(cache)!r}, progress=False)  # Pillow writes
        loader = data.BatchLoader(train, 4, training=True, seed=1)
        images, labels = loader[0]
        assert images.dtype == np.uint8 and images.shape == (4, 64, 64, 3) and labels.dtype == np.int32
        for call, feature in ((lambda: data.TfdsSource(), "the TFDS builder"),
                              (lambda: data.make_dataset(train), "make_dataset"),
                              (lambda: data.load_split({str(fixture_zip)!r}, "val", cache="memory",
                                                       decoder="tensorflow"), "decoder='tensorflow'")):
            try:
                call()
            except TensorFlowRequired as error:
                assert feature in str(error), error
            else:
                raise AssertionError(feature + " ran without TensorFlow")
        print("no tensorflow:", "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None)
    """)
    out = run_python("-c", script, env={"KERAS_BACKEND": "jax"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Using cached val images" in out.stdout and "no tensorflow: False" in out.stdout
    entries = sorted(os.listdir(cache))
    assert len(entries) == 2  # one entry per split, whichever decoder wrote it
    with open(cache / next(e for e in entries if e.startswith("train")) / "meta.json") as f:
        assert json.load(f)["decoder"] == "pillow"
    train = data.load_split(fixture_zip, "train", cache_dir=cache, progress=False, decoder="tensorflow")
    assert isinstance(train.images, np.memmap)  # read from Pillow's entry, not decoded again
    assert np.array_equal(train.images, data.load_split(fixture_zip, "train", cache="memory", progress=False).images)
    assert sorted(os.listdir(cache)) == entries


# -- pipelines --------------------------------------------------------------------------
def test_pipeline_shapes_order_and_determinism(fixture_zip):
    def batches(seed):
        ds = data.make_dataset(data.load_split(fixture_zip, "train", progress=False), batch_size=4, seed=seed)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    a, b, c = batches(1), batches(1), batches(2)
    assert len(a) == 3 and a[0][0].shape == (4, 64, 64, 3) and a[0][0].dtype == np.uint8  # the model casts
    assert all(np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not all(np.array_equal(y1, y2) for (_, y1), (_, y2) in zip(a, c))
    labels = np.concatenate([y for _, y in a])
    assert sorted(labels) == sorted(np.repeat(np.arange(3), TRAIN_PER_CLASS))
    for x, y in a:  # images still carry their own labels after the shuffle
        assert [mean_colour_label(im.astype(np.uint8)) for im in x] == list(y)


def test_pipeline_reshuffles_each_epoch_and_eval_is_ordered(fixture_zip):
    ds = data.make_dataset(data.load_split(fixture_zip, "train", progress=False), batch_size=12, seed=3)
    epoch1 = next(iter(ds))[1].numpy()
    epoch2 = next(iter(ds))[1].numpy()
    assert not np.array_equal(epoch1, epoch2)
    val = data.make_dataset(data.load_split(fixture_zip, "val", progress=False), batch_size=4)
    sizes = [len(y) for _, y in val]
    assert sizes == [4, 2]  # no shuffle, last partial batch kept
    decoded = data.load_split(fixture_zip, "val", progress=False)
    assert np.array_equal(np.concatenate([y for _, y in val]), decoded.labels)


def test_augment_hook_gets_batches_and_per_batch_seeds(fixture_zip):
    seen = []

    def augment(images, seed):
        seen.append(seed)
        return images[:, 4:60, 4:60, :] + tf.cast(seed[0] % 2, tf.float32) * 0.0

    ds = data.make_dataset(data.load_split(fixture_zip, "train", progress=False), batch_size=4, augment=augment,
                           image_size=32)
    x, y = next(iter(ds))
    assert x.shape == (4, 32, 32, 3) and y.shape == (4,)
    assert seen and seen[0].shape == (2,)

    # Seeds differ from batch to batch and epoch to epoch, and repeat with the pipeline seed.
    def seeds(seed):
        ds = data.make_dataset(data.load_split(fixture_zip, "train", progress=False), batch_size=4, seed=seed,
                               augment=lambda images, s: tf.fill(tf.shape(images), tf.cast(s[0] % 1000, tf.float32)))
        return [float(x[0, 0, 0, 0]) for _ in range(2) for x, _ in ds]

    s1, s2 = seeds(5), seeds(5)
    assert s1 == s2 and len(set(s1)) == len(s1)


def test_resize_for_progressive_resizing(fixture_zip):
    val = data.load_split(fixture_zip, "val", progress=False)
    for size in (32, 40, 48, 54, 64):
        x, _ = next(iter(data.make_dataset(val, batch_size=2, image_size=size)))
        assert x.shape == (2, size, size, 3)
    x, _ = next(iter(data.make_dataset(val, batch_size=2, image_size=32)))
    # Resizing a flat-coloured image keeps its colour (antialiased bilinear).
    assert mean_colour_label(x[0].numpy().astype(np.uint8)) == int(_[0])


def test_make_dataset_takes_a_loaded_split(fixture_zip):
    with pytest.raises(TypeError, match="load_split"):
        data.make_dataset(fixture_zip, batch_size=4)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        data.make_dataset(data.load_split(fixture_zip, "val", progress=False), "val")


# -- bad input --------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere.*no such file or folder.*tiny-imagenet-200.zip"):
        TinyImageNet(tmp_path / "nowhere")


def test_wrong_layout(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"no wnids.txt.*official layout"):
        TinyImageNet(tmp_path)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("something/else.txt", "x")
    with pytest.raises(DatasetError, match=r"other.zip: no wnids.txt in the archive"):
        TinyImageNet(tmp_path / "other.zip")
    (tmp_path / "notzip.zip").write_bytes(b"hello")
    with pytest.raises(DatasetError, match="notzip.zip: not a zip archive"):
        TinyImageNet(tmp_path / "notzip.zip")


def test_truncated_zip_is_a_partial_download(fixture_zip, tmp_path):
    partial = tmp_path / "tiny-imagenet-200.zip"
    partial.write_bytes(fixture_zip.read_bytes()[: fixture_zip.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"tiny-imagenet-200.zip: not a.*(partial|zip)"):
        TinyImageNet(partial)


def test_partial_archive_missing_images(fixture_copy, tmp_path):
    (fixture_copy / "train" / "n01443537" / "images" / "n01443537_3.JPEG").unlink()
    partial = zip_folder(fixture_copy, tmp_path / "partial.zip")
    for src in (fixture_copy, partial):
        with pytest.raises(DatasetError, match=r"n01443537_3.JPEG: missing, but listed in .*n01443537_boxes.txt line 4"):
            TinyImageNet(src).records("train")
    skipped = TinyImageNet(fixture_copy, on_error="skip")
    assert len(skipped.records("train")) == TRAIN_PER_CLASS * N_CLASSES - 1 and len(skipped.problems) == 1


def test_missing_class_folder_and_split(fixture_copy):
    shutil.rmtree(fixture_copy / "train" / "n01629819")
    with pytest.raises(DatasetError, match=r"train/n01629819: missing; .*wnids.txt lists class n01629819"):
        TinyImageNet(fixture_copy).records("train")
    shutil.rmtree(fixture_copy / "test")
    with pytest.raises(DatasetError, match=r"test: missing; expected the test split folder"):
        TinyImageNet(fixture_copy).records("test")


def test_val_annotation_with_unknown_class(fixture_copy):
    ann = fixture_copy / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    lines[3] = lines[3].replace(FIXTURE_WNIDS[0], "n09999999")
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"val_annotations.txt line 4: val_3.JPEG is labelled n09999999, which is not in wnids.txt"):
        TinyImageNet(fixture_copy).records("val")
    ds = TinyImageNet(fixture_copy, on_error="skip")
    assert len(ds.records("val")) == VAL_PER_CLASS * N_CLASSES - 1
    assert any("val_3.JPEG" in p for p in ds.problems)  # unlabelled image counted too


def test_malformed_annotation_line(fixture_copy):
    ann = fixture_copy / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_9.JPEG\tn01443537\t1\t2\n")
    with pytest.raises(DatasetError, match=r"val_annotations.txt line 7: expected 6 tab-separated fields"):
        TinyImageNet(fixture_copy).records("val")


@pytest.mark.parametrize("decoder", ["tensorflow", "pillow"])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_bad_jpeg_named_or_skipped(fixture_copy, tmp_path, damage, kind, decoder):
    target = fixture_copy / "val" / "images" / "val_2.JPEG"
    content = target.read_bytes()
    target.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"\xff\xd8garbage" * 20)
    src = fixture_copy if kind == "folder" else zip_folder(fixture_copy, tmp_path / "bad.zip")
    with pytest.raises(DatasetError, match=r"val_2.JPEG: not a valid JPEG image") as error:
        data.load_split(src, "val", cache="memory", progress=False, decoder=decoder)
    # What is wrong, in the same words from either decoder, without TensorFlow's op and device names.
    reason = {"truncated": "(truncated or corrupt JPEG data)",
              "corrupt": "(unrecognised image data (not JPEG, PNG, GIF, BMP or WebP))"}
    assert f"val_2.JPEG: not a valid JPEG image {reason[damage]}." in str(error.value)
    assert str(error.value).endswith(". `python -m tiny_keras.data PATH` lists every bad file; in Python, "
                                     "on_error='skip' leaves them out")
    for internal in ("function_node", "job:localhost", "[Op:", "{{", "::"):
        assert internal not in str(error.value)
    decoded = data.load_split(src, "val", cache="memory", on_error="skip", progress=False, decoder=decoder)
    assert len(decoded) == VAL_PER_CLASS * N_CLASSES - 1 and "val_2.JPEG" not in decoded.files
    assert len(decoded.problems) == 1 and "val_2.JPEG" in decoded.problems[0]
    # The images after the bad one keep their own labels: nothing shifted.
    assert [mean_colour_label(im) for im in decoded.images] == list(decoded.labels)


@pytest.mark.parametrize("decoder", ["tensorflow", "pillow"])
def test_wrong_image_size_is_named(fixture_copy, decoder):
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(fixture_copy / "test" / "images" / "test_1.JPEG")
    with pytest.raises(DatasetError, match=r"test_1.JPEG: decoded to shape \(32, 48, 3\), expected \(64, 64, 3\)"):
        data.load_split(fixture_copy, "test", cache="memory", progress=False, decoder=decoder)


# -- TFDS builder -----------------------------------------------------------------------
def _tfds_load(tmp_path, manual_dir, split):
    import tensorflow_datasets as tfds

    return tfds.load(
        "tiny_imagenet",
        split=split,
        data_dir=str(tmp_path / "tfds"),
        download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=str(manual_dir))},
    )


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_tfds_builder_from_manual_dir(fixture_root, fixture_zip, tmp_path, kind):
    import tensorflow_datasets as tfds

    manual = tmp_path / "manual"
    manual.mkdir()
    if kind == "zip":
        shutil.copy(fixture_zip, manual / "tiny-imagenet-200.zip")
    else:
        shutil.copytree(fixture_root, manual / "tiny-imagenet-200")
    train = list(tfds.as_numpy(_tfds_load(tmp_path, manual, "train")))
    val = list(tfds.as_numpy(_tfds_load(tmp_path, manual, "validation")))
    test = list(tfds.as_numpy(_tfds_load(tmp_path, manual, "test")))
    assert (len(train), len(val), len(test)) == (TRAIN_PER_CLASS * N_CLASSES, VAL_PER_CLASS * N_CLASSES, TEST_IMAGES)
    official = data.official_classes()
    for ex in train + val:
        assert ex["image"].shape == (64, 64, 3)
        assert ex["label"] == official.index(ex["wnid"].decode())
        assert mean_colour_label(ex["image"]) == SORTED.index(ex["wnid"].decode())
    by_name = {ex["file_name"].decode(): ex for ex in train + val}
    assert list(by_name["n01641577_2.JPEG"]["bbox"]) == [2, 3, 42, 52]
    assert list(by_name["val_4.JPEG"]["bbox"]) == [4, 8, 34, 44]
    assert all(ex["label"] == -1 and list(ex["bbox"]) == [-1, -1, -1, -1] for ex in test)
    assert by_name[GRAY_TRAIN_FILE]["image"].shape == (64, 64, 3)


def test_tfds_builder_downloads_over_http(fixture_zip, tmp_path, monkeypatch):
    """The real download path, served from a local HTTP server in place of the official host."""
    import functools
    import http.server
    import threading

    import tensorflow_datasets as tfds

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(fixture_zip.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("TINY_IMAGENET_URL", f"http://127.0.0.1:{server.server_address[1]}/tiny-imagenet-200.zip")
        monkeypatch.setenv("TINY_IMAGENET_SHA256", hashlib.sha256(fixture_zip.read_bytes()).hexdigest())
        monkeypatch.delenv("HTTP_PROXY", raising=False)
        monkeypatch.delenv("http_proxy", raising=False)
        val = list(tfds.as_numpy(tfds.load("tiny_imagenet", split="validation", data_dir=str(tmp_path / "tfds"))))
    finally:
        server.shutdown()
    assert len(val) == VAL_PER_CLASS * N_CLASSES
    downloaded = list((tmp_path / "tfds" / "downloads").rglob("*tiny-imagenet-200*.zip"))
    assert len(downloaded) == 1 and downloaded[0].read_bytes() == fixture_zip.read_bytes()


def test_tfds_builder_rejects_corrupt_jpeg(fixture_copy, tmp_path):
    target = fixture_copy / "train" / "n01443537" / "images" / "n01443537_1.JPEG"
    target.write_bytes(target.read_bytes()[:200])
    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.copytree(fixture_copy, manual / "tiny-imagenet-200")
    with pytest.raises(DatasetError, match="n01443537_1.JPEG: not a valid JPEG"):
        _tfds_load(tmp_path, manual, "train")


def test_load_split_from_tfds_matches_zip(fixture_zip, tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from tiny_keras.data import tfds_builder

    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.copy(fixture_zip, manual / "tiny-imagenet-200.zip")
    source = tfds_builder.TfdsSource(
        data_dir=str(tmp_path / "tfds"), download_config=tfds.download.DownloadConfig(manual_dir=str(manual)),
    )
    from_tfds = data.load_split(source, "val", cache="memory", progress=False)
    from_zip = data.load_split(fixture_zip, "val", cache="memory", progress=False)
    order = [from_tfds.files.index(f) for f in from_zip.files]
    assert np.array_equal(from_tfds.images[order], from_zip.images)  # same decoder, same pixels
    assert np.array_equal(from_tfds.labels[order], from_zip.labels)  # fixture wnids are the first official ones


# -- verify CLI ---------------------------------------------------------------------------
def _run_cli(*args):
    return run_python("-m", "tiny_keras.data", *args, timeout=300)


def test_verify_cli_json_and_table(fixture_zip):
    out = _run_cli(fixture_zip, "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["train"], summary["val"], summary["test"]) == (12, 6, 3)
    assert summary["classes"] == 3 and summary["grayscale"] == 1 and summary["problems"] == []
    table = _run_cli(fixture_zip)
    assert table.returncode == 0 and "grayscale" in table.stdout and "problems    none" in table.stdout


def test_verify_cli_reports_problems(fixture_copy, tmp_path):
    target = fixture_copy / "val" / "images" / "val_2.JPEG"
    target.write_bytes(target.read_bytes()[:100])
    out = _run_cli(fixture_copy, "--json")
    assert out.returncode == 1
    summary = json.loads(out.stdout)
    assert summary["val"] == 5 and any("val_2.JPEG" in p for p in summary["problems"])
    missing = _run_cli(tmp_path / "nothing")
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


# -- the real dataset -----------------------------------------------------------------------
@requires_real_data
def test_real_dataset_layout(real_dataset):
    ds = TinyImageNet(real_dataset)
    assert len(ds.classes) == 200 and ds.classes == data.official_classes()
    assert [len(ds.records(s)) for s in ("train", "val", "test")] == [100_000, 10_000, 10_000]
    val0 = next(r for r in ds.records("val") if r.file_name == "val_0.JPEG")
    assert val0.wnid == "n03444034" and val0.label == ds.classes.index("n03444034")
    assert val0.bbox == (0, 32, 44, 62)
    counts = np.bincount([r.label for r in ds.records("train")], minlength=200)
    assert (counts == 500).all()


@requires_real_data
@pytest.mark.slow
def test_real_dataset_every_image_decodes_to_64x64x3(real_dataset):
    for split, n in (("train", 100_000), ("val", 10_000), ("test", 10_000)):
        decoded = data.load_split(real_dataset, split, cache="memory", progress=False)
        assert decoded.images.shape == (n, 64, 64, 3) and decoded.problems == []
        assert 0 < decoded.grayscale.sum() < 0.03 * n  # about 2% are grayscale


@requires_real_data
def test_real_dataset_pillow_and_tensorflow_decode_alike(real_dataset):
    """A sample of the archive (every 400th JPEG, and the grayscale ones among every 7th of the first
    20,000): the same pixels from both decoders, as measured over all 120,000."""
    with zipfile.ZipFile(real_dataset) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".JPEG"))
        sample = [zf.read(n) for n in names[::400]]
        sample += [c for c in map(zf.read, names[:20_000:7]) if Image.open(io.BytesIO(c)).mode == "L"]
    gray = 0
    for contents in sample:
        pillow, channels = decode.decode_jpeg_pillow(contents)
        assert np.array_equal(pillow, decode.decode_jpeg(contents).numpy())
        gray += channels == 1
    assert len(sample) > 300 and gray > 30
