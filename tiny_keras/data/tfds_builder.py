"""The TensorFlow Datasets builder ``tiny_imagenet`` (:class:`TinyImageNetBuilder`), and the
prepared dataset as a source for :func:`~tiny_keras.data.load_split` (:class:`TfdsSource`).

On Keras's TensorFlow backend, importing ``tiny_keras.data`` registers it, so
``tfds.load("tiny_imagenet")`` works::

    import tiny_keras.data  # registers "tiny_imagenet"
    ds = tfds.load("tiny_imagenet", split="validation")

TFDS needs TensorFlow, so on JAX and PyTorch nothing here imports ``tensorflow_datasets``
until it is used: :class:`TfdsSource`, :func:`register` or reading ``TinyImageNetBuilder``
registers the builder then, or raises :class:`~tiny_keras.backend.TensorFlowRequired`
naming the TFDS builder where TensorFlow (or TFDS) cannot be imported. The official layout
(:class:`~tiny_keras.data.layout.TinyImageNet`) needs neither.

Online, the official archive is downloaded (``$TINY_IMAGENET_URL`` overrides the
address, for a mirror) and checked against its SHA-256 (``$TINY_IMAGENET_SHA256``
overrides it, for a different archive); a download that fails or arrives damaged raises
``tiny_keras.download.DownloadError`` saying what failed and the other ways to get the data. Offline, put ``tiny-imagenet-200.zip`` or the extracted
``tiny-imagenet-200/`` folder in TFDS's manual-download folder
(``<data_dir>/downloads/manual/`` by default, or pass
``download_config=tfds.download.DownloadConfig(manual_dir=...)``); it is used instead
of the download whenever it is there.

Splits: ``train`` (100,000), ``validation`` (10,000), ``test`` (10,000, label -1).
Features: ``image`` (64x64x3 uint8; the original JPEG bytes are stored, and
grayscale JPEGs decode to 3 channels), ``label`` (the sorted index of the wnid among
the official 200 classes, see ``tiny_keras.data.classes``), ``wnid``, ``file_name``,
``bbox`` (int32 ``[x0, y0, x1, y1]`` in pixels as in the annotation files;
``[-1, -1, -1, -1]`` for the test split, which has no boxes).
"""
import json
import os

import numpy as np

from tiny_keras import backend, download
from tiny_keras.data import decode, layout
from tiny_keras.data.classes import official_classes

DEFAULT_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
OFFICIAL_SHA256 = "f0284c213219678a8ae8ebda2161995fc8b18e7005a78e505fdf20d0632ba95f"
TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def download_url():
    return os.environ.get("TINY_IMAGENET_URL") or DEFAULT_URL


def expected_sha256():
    return os.environ.get("TINY_IMAGENET_SHA256") or OFFICIAL_SHA256


def unavailable(url, why, manual_dir):
    """The :class:`~tiny_keras.download.DownloadError` for a failed download of the archive."""
    return download.DownloadError(
        f"Could not download Tiny ImageNet from {url}: {why}. Get the data one of three ways: "
        f"(1) run again when {download.host(url)} can be reached (or set $TINY_IMAGENET_URL to a mirror); "
        f"(2) get {layout.ARCHIVE_NAME} yourself and pass --data PATH (the zip or its extracted "
        f"{layout.ROOT_NAME}/ folder; data=PATH in Python); (3) put the zip or the folder in TFDS's manual "
        f"directory, {manual_dir}, where tfds.load('tiny_imagenet') finds it.")


FEATURE = "the TFDS builder"
_builder_class = None


def _tfds():
    """``tensorflow_datasets``, or an error naming the TFDS builder."""
    backend.require_tensorflow(FEATURE)
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise backend.TensorFlowRequired(
            f"{FEATURE} needs TensorFlow Datasets, which cannot be imported here ({type(error).__name__}: {error}). "
            "Install it with `pip install tensorflow-datasets`, or read the official zip or folder with "
            "tiny_keras.data.load_split(PATH, ...), which needs neither."
        ) from error
    return tfds


def register():
    """Define (and so register with TFDS) the builder ``tiny_imagenet``; returns its class."""
    global _builder_class
    if _builder_class is None:
        _builder_class = _define_builder(_tfds())
    return _builder_class


def __getattr__(name):
    if name == "TinyImageNetBuilder":
        return register()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_builder(tfds):
    class TinyImageNetBuilder(tfds.core.GeneratorBasedBuilder):
        """Tiny ImageNet: 200 classes of 64x64 images, 500 train, 50 val and 50 test per class."""

        name = "tiny_imagenet"
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "Official tiny-imagenet-200 archive; JPEG bytes stored unchanged."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
        Optional: to build without a download, place the official {layout.ARCHIVE_NAME}
        (or its extracted {layout.ROOT_NAME}/ folder) in the manual directory.
        """

        def _info(self):
            return self.dataset_info_from_configs(
                description=__doc__,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(64, 64, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=list(official_classes().wnids)),
                    "wnid": tfds.features.Text(),
                    "file_name": tfds.features.Text(),
                    "bbox": tfds.features.Tensor(shape=(4,), dtype=np.int32),
                }),
                supervised_keys=("image", "label"),
                homepage="https://www.kaggle.com/c/tiny-imagenet",
            )

        def _source_path(self, dl_manager):
            try:
                manual = dl_manager.manual_dir
            except AssertionError:  # no manual directory, or an empty one
                manual = None
            if manual is not None:
                for name in (layout.ARCHIVE_NAME, layout.ROOT_NAME):
                    if (manual / name).exists():
                        return os.fspath(manual / name)
                if (manual / "wnids.txt").exists():
                    return os.fspath(manual)
                raise layout.DatasetError(
                    f"{manual}: the manual directory holds neither {layout.ARCHIVE_NAME} nor {layout.ROOT_NAME}/"
                )
            # Downloaded with keras.utils.get_file, not dl_manager.download: TFDS retries a
            # refused connection ten times with exponential backoff, over three minutes.
            url = download_url()
            downloads = os.fspath(dl_manager.download_dir)
            try:
                return download.fetch(url, os.path.join(downloads, layout.ARCHIVE_NAME), expected_sha256())
            except download.DownloadError as error:
                raise unavailable(url, str(error), os.path.join(downloads, "manual")) from None

        def _split_generators(self, dl_manager):
            dataset = layout.TinyImageNet(self._source_path(dl_manager))
            official = official_classes()
            unknown = [w for w in dataset.classes if w not in official]
            if unknown:
                raise layout.DatasetError(
                    f"{dataset.describe('wnids.txt')}: classes {unknown[:5]} are not among the official 200 "
                    "Tiny ImageNet classes."
                )
            return {name: self._generate_examples(dataset, split) for split, name in TFDS_SPLITS.items()}

        def _generate_examples(self, dataset, split):
            records = dataset.records(split)
            # Check every JPEG decodes before anything is written: a corrupt file stops the
            # build with its name instead of failing later, at read time.
            items = ((dataset.describe(r.path), (lambda r=r: dataset.read(r))) for r in records)
            decode.decode_all(items, len(records), on_error="raise", progress=False, decoder=decode.TENSORFLOW)
            official = official_classes()
            for r in records:
                yield r.file_name, {
                    "image": dataset.read(r),
                    "label": official.index(r.wnid) if r.wnid else -1,
                    "wnid": r.wnid,
                    "file_name": r.file_name,
                    "bbox": np.asarray(r.bbox, np.int32),
                }

    return TinyImageNetBuilder


class TfdsSource:
    """The TFDS dataset ``tiny_imagenet`` as a source: the interface of
    :class:`~tiny_keras.data.layout.TinyImageNet` (``classes``, ``location``, ``problems``,
    ``records``, ``read``, ``describe``, ``signature``), so
    :func:`~tiny_keras.data.load_split` reads both the same way.

    >>> val = tiny_keras.data.load_split(TfdsSource(), "val")   # as load_split(None, "val")

    The dataset is downloaded and prepared here if it is not yet (``data_dir`` and
    ``download_config`` are TFDS's). A record's ``path`` is ``<split>/<file_name>``; its
    label is the official class index (``tiny_keras.data.official_classes``).
    """

    def __init__(self, data_dir=None, download_config=None):
        tfds = _tfds()
        self._builder = tfds.builder(register().name, data_dir=data_dir)
        self._builder.download_and_prepare(download_config=download_config)
        self.location = os.fspath(self._builder.data_dir)
        self.classes = official_classes()
        self.problems = []  # the build checked every file; nothing is ever skipped
        self._records = {}
        self._contents = {}

    def describe(self, rel):
        """A user-facing name for an example: ``tiny_imagenet/<split>/<file_name>``."""
        return f"{self._builder.name}/{rel}"

    def read(self, record_or_path):
        """The example's JPEG bytes, as stored."""
        rel = record_or_path.path if isinstance(record_or_path, layout.Record) else record_or_path
        return self._contents[rel]  # filled by records()

    def signature(self, split):
        """The prepared dataset's folder and its metadata (for cache keys)."""
        return [self.location, json.dumps(self._builder.info.as_json, sort_keys=True)]

    def records(self, split):
        """All records of ``split`` ("train", "val" or "test"), in the prepared dataset's order."""
        if split not in layout.SPLITS:
            raise ValueError(f"split must be one of {layout.SPLITS}. Received: {split=}")
        if split not in self._records:
            tfds = _tfds()
            ds = self._builder.as_dataset(split=TFDS_SPLITS[split], decoders={"image": tfds.decode.SkipDecoding()})
            records = []
            for ex in tfds.as_numpy(ds):
                name, label = ex["file_name"].decode(), int(ex["label"])
                rel = f"{split}/{name}"
                wnid = self.classes.wnid(label) if label >= 0 else ""
                records.append(layout.Record(name, rel, label, wnid, tuple(int(v) for v in ex["bbox"])))
                self._contents[rel] = ex["image"]
            self._records[split] = records
        return self._records[split]
