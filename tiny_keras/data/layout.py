"""Reading the official Tiny ImageNet layout, from the extracted folder or the zip itself.

The official layout (``tiny-imagenet-200/``)::

    wnids.txt                                  the 200 class ids, one per line
    words.txt                                  wnid <TAB> names (all of WordNet)
    train/<wnid>/images/<wnid>_<k>.JPEG        500 per class
    train/<wnid>/<wnid>_boxes.txt              file <TAB> x0 <TAB> y0 <TAB> x1 <TAB> y1
    val/images/val_<k>.JPEG                    10,000
    val/val_annotations.txt                    file <TAB> wnid <TAB> x0 <TAB> y0 <TAB> x1 <TAB> y1
    test/images/test_<k>.JPEG                  10,000, unlabelled

A validation folder already reorganised into class folders (``val/<wnid>/images/*.JPEG``
or ``val/<wnid>/*.JPEG``, boxes in ``val/<wnid>/<wnid>_boxes.txt`` if present) is
accepted too. Nothing here decodes images: this module lists records and reads bytes.
"""
import dataclasses
import os
import re
import zipfile

from tiny_keras.data.classes import ClassNames

ROOT_NAME = "tiny-imagenet-200"
ARCHIVE_NAME = ROOT_NAME + ".zip"
SPLITS = ("train", "val", "test")
NO_BOX = (-1, -1, -1, -1)
IMAGE_SIZE = 64  # every Tiny ImageNet image is 64x64 (decode.IMAGE_SHAPE checks it)
_WNID = re.compile(r"^n\d{8}$")
_IMAGE_EXTENSIONS = (".jpeg", ".jpg")


class DatasetError(ValueError):
    """The dataset on disk is not what was expected; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One image of a split.

    ``path`` is relative to the dataset root (``train/<wnid>/images/<file>``);
    ``label`` is the sorted-wnid index (-1 for the unlabelled test split);
    ``bbox`` is ``(x0, y0, x1, y1)`` in pixels, or ``NO_BOX`` when the split has none.
    """

    file_name: str
    path: str
    label: int
    wnid: str
    bbox: tuple = NO_BOX


class _Folder:
    def __init__(self, root):
        self.root = root
        self.location = root

    def describe(self, rel):
        return os.path.join(self.root, rel)

    def isdir(self, rel):
        return os.path.isdir(os.path.join(self.root, rel))

    def isfile(self, rel):
        return os.path.isfile(os.path.join(self.root, rel))

    def listdir(self, rel):
        with os.scandir(os.path.join(self.root, rel)) as it:
            return sorted(e.name for e in it)

    def read(self, rel):
        with open(os.path.join(self.root, rel), "rb") as f:
            return f.read()

    def signature(self, rels):
        """What changes when any of these files changes: their sizes and mtimes."""
        parts = []
        for rel in rels:
            st = os.stat(os.path.join(self.root, rel))
            parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
        return parts


class _Zip:
    def __init__(self, path, zf, prefix):
        self.location = path
        self._path = path
        self._zf = zf
        self._prefix = prefix
        self._dirs = {}  # folder (relative to the root, no trailing slash) -> sorted entry names
        self._files = set()
        for name in zf.namelist():
            if not name.startswith(prefix) or name == prefix:
                continue
            rel = name[len(prefix):].rstrip("/")
            if not name.endswith("/"):
                self._files.add(rel)
            parts = rel.split("/")
            for depth in range(len(parts)):
                parent = "/".join(parts[:depth])
                self._dirs.setdefault(parent, set()).add(parts[depth])
        self._dirs = {k: sorted(v) for k, v in self._dirs.items()}

    def __getstate__(self):  # zip handles do not pickle; reopen in the new process
        return {"path": self._path, "prefix": self._prefix}

    def __setstate__(self, state):
        self.__init__(state["path"], zipfile.ZipFile(state["path"]), state["prefix"])

    def describe(self, rel):
        return f"{self._path}:{self._prefix}{rel}"

    def isdir(self, rel):
        return rel.rstrip("/") in self._dirs

    def isfile(self, rel):
        return rel in self._files

    def listdir(self, rel):
        return list(self._dirs.get(rel.rstrip("/"), []))

    def read(self, rel):
        try:
            return self._zf.read(self._prefix + rel)
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise DatasetError(f"{self.describe(rel)}: cannot be read from the archive ({e})") from e

    def signature(self, rels):
        st = os.stat(self._path)
        return [f"{os.path.abspath(self._path)}:{st.st_size}:{st.st_mtime_ns}"]


def _open_zip(path):
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError) as e:
        raise DatasetError(
            f"{path}: not a complete zip archive ({e}). Expected the official {ARCHIVE_NAME}; "
            "a partial download looks like this: delete it and download again."
        ) from e
    wnids = [n for n in zf.namelist() if n == "wnids.txt" or n.endswith("/wnids.txt")]
    if not wnids:
        raise DatasetError(
            f"{path}: no wnids.txt in the archive. Expected the official layout "
            f"{ROOT_NAME}/{{wnids.txt, words.txt, train/, val/, test/}}."
        )
    prefix = min(wnids, key=len)[: -len("wnids.txt")]
    return _Zip(path, zf, prefix)


def _open_storage(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DatasetError(
            f"{path}: no such file or folder. Expected the {ARCHIVE_NAME} archive, "
            f"its extracted {ROOT_NAME}/ folder, or a folder holding either."
        )
    if os.path.isfile(path):
        if not zipfile.is_zipfile(path):
            raise DatasetError(f"{path}: not a zip archive (expected the official {ARCHIVE_NAME}).")
        return _open_zip(path)
    if os.path.isfile(os.path.join(path, "wnids.txt")):
        return _Folder(path)
    if os.path.isfile(os.path.join(path, ROOT_NAME, "wnids.txt")):
        return _Folder(os.path.join(path, ROOT_NAME))
    if os.path.isfile(os.path.join(path, ARCHIVE_NAME)):
        return _open_zip(os.path.join(path, ARCHIVE_NAME))
    raise DatasetError(
        f"{path}: no wnids.txt, {ROOT_NAME}/ folder or {ARCHIVE_NAME} here. Expected the "
        f"official layout {ROOT_NAME}/{{wnids.txt, words.txt, train/, val/, test/}} or its zip."
    )


def _parse_rows(text, where, ncols):
    """Tab-separated rows of exactly ``ncols`` fields, with 1-based line numbers."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != ncols:
            raise DatasetError(f"{where} line {lineno}: expected {ncols} tab-separated fields, got {line!r}")
        rows.append((lineno, fields))
    return rows


def _box(fields, where, lineno):
    """``(x0, y0, x1, y1)``: inclusive pixel indices of a 64x64 image, x0 <= x1, y0 <= y1."""
    try:
        box = tuple(int(v) for v in fields)
    except ValueError:
        raise DatasetError(f"{where} line {lineno}: box coordinates must be integers, got {fields}") from None
    x0, y0, x1, y1 = box
    if not (0 <= x0 <= x1 < IMAGE_SIZE and 0 <= y0 <= y1 < IMAGE_SIZE):
        raise DatasetError(
            f"{where} line {lineno}: box {box} is not inside the {IMAGE_SIZE}x{IMAGE_SIZE} image; expected "
            f"x0 <= x1 and y0 <= y1, each between 0 and {IMAGE_SIZE - 1} (inclusive pixel indices)"
        )
    return box


def _is_image(name):
    return name.lower().endswith(_IMAGE_EXTENSIONS)


class TinyImageNet:
    """The Tiny ImageNet dataset at ``path``: the zip, the folder, or a folder holding either.

    >>> ds = TinyImageNet("tiny-imagenet-200.zip")
    >>> ds.classes.name(0), len(ds.records("val"))
    ('goldfish', 10000)

    ``on_error="raise"`` (default) stops at the first inconsistency with an error naming
    the file; ``"skip"`` leaves the bad entry out and records it in ``self.problems``.

    A source for :func:`~tiny_keras.data.load_split`: ``classes``, ``location``,
    ``problems``, ``records``, ``read``, ``describe`` and ``signature`` are what it uses;
    :class:`~tiny_keras.data.tfds_builder.TfdsSource` offers the same for the TFDS dataset.
    """

    def __init__(self, path, on_error="raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip'. Received: {on_error=}")
        self.path = os.fspath(path)
        self.on_error = on_error
        self.problems = []
        self._storage = _open_storage(self.path)
        self.location = self._storage.location
        self.classes = ClassNames(self._read_wnids(), self._read_words())
        self._records = {}

    def __str__(self):
        return self.path  # as given: messages that name the data read as they would with the path

    # -- files ----------------------------------------------------------------------------
    def describe(self, rel):
        """A user-facing name for a file inside the dataset (path, or archive:member)."""
        return self._storage.describe(rel)

    def read(self, record_or_path):
        rel = record_or_path.path if isinstance(record_or_path, Record) else record_or_path
        return self._storage.read(rel)

    def signature(self, split):
        """Strings that change whenever the split's source files change (for cache keys)."""
        records = self.records(split)
        return self._storage.signature([r.path for r in records])

    def _problem(self, message):
        if self.on_error == "raise":
            raise DatasetError(message)
        self.problems.append(message)

    def _text(self, rel, what):
        if not self._storage.isfile(rel):
            raise DatasetError(f"{self.describe(rel)}: missing; expected {what}.")
        return self._storage.read(rel).decode("utf-8")

    def _read_wnids(self):
        where = self.describe("wnids.txt")
        wnids = self._text("wnids.txt", "one WordNet id per line").split()
        if not wnids:
            raise DatasetError(f"{where}: empty; expected one WordNet id per line.")
        for lineno, w in enumerate(wnids, 1):
            if not _WNID.match(w):
                raise DatasetError(f"{where} line {lineno}: {w!r} is not a WordNet id like n01443537.")
        dupes = sorted({w for w in wnids if wnids.count(w) > 1})
        if dupes:
            raise DatasetError(f"{where}: duplicate class ids {dupes}.")
        return wnids

    def _read_words(self):
        words = {}
        for line in self._text("words.txt", "wnid<TAB>class names lines").splitlines():
            wnid, _, name = line.partition("\t")
            words[wnid.strip()] = name.strip()
        return words

    # -- records --------------------------------------------------------------------------
    def records(self, split):
        """All records of ``split`` ("train", "val" or "test"), in a fixed order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}. Received: {split=}")
        if split not in self._records:
            if not self._storage.isdir(split):
                raise DatasetError(f"{self.describe(split)}: missing; expected the {split} split folder.")
            self._records[split] = getattr(self, f"_{split}_records")()
        return self._records[split]

    def _class_folder_records(self, split, wnid):
        """Images of one class folder: ``<split>/<wnid>/images/*`` (or directly in it) with boxes."""
        folder = f"{split}/{wnid}"
        image_dir = f"{folder}/images" if self._storage.isdir(f"{folder}/images") else folder
        images = [n for n in self._storage.listdir(image_dir) if _is_image(n)]
        boxes_rel = f"{folder}/{wnid}_boxes.txt"
        boxes = None
        if self._storage.isfile(boxes_rel):
            where = self.describe(boxes_rel)
            boxes = {}
            for lineno, fields in _parse_rows(self._storage.read(boxes_rel).decode(), where, 5):
                boxes[fields[0]] = (lineno, _box(fields[1:], where, lineno))
        elif split == "train":
            raise DatasetError(f"{self.describe(boxes_rel)}: missing; expected the boxes of class {wnid}.")
        label = self.classes.index(wnid)
        present = set(images)
        records = []
        for name in images:
            if boxes is not None and name not in boxes:
                self._problem(f"{self.describe(f'{image_dir}/{name}')}: no box for it in {self.describe(boxes_rel)}.")
                continue
            bbox = boxes[name][1] if boxes is not None else NO_BOX
            records.append(Record(name, f"{image_dir}/{name}", label, wnid, bbox))
        for name, (lineno, _) in sorted((boxes or {}).items()):
            if name not in present:
                self._problem(
                    f"{self.describe(f'{image_dir}/{name}')}: missing, but listed in "
                    f"{self.describe(boxes_rel)} line {lineno} (a partial copy of the dataset?)."
                )
        if not records:
            self._problem(f"{self.describe(image_dir)}: no JPEG images for class {wnid}.")
        return records

    def _check_class_folders(self, split, folders):
        unknown = [f for f in folders if f not in self.classes]
        for f in unknown:
            self._problem(f"{self.describe(f'{split}/{f}')}: class folder not listed in {self.describe('wnids.txt')}.")

    def _train_records(self):
        folders = [f for f in self._storage.listdir("train") if self._storage.isdir(f"train/{f}")]
        self._check_class_folders("train", folders)
        records = []
        for wnid in self.classes:
            if not self._storage.isdir(f"train/{wnid}"):
                raise DatasetError(
                    f"{self.describe(f'train/{wnid}')}: missing; {self.describe('wnids.txt')} lists class {wnid}."
                )
            records.extend(self._class_folder_records("train", wnid))
        return records

    def _val_records(self):
        if self._storage.isfile("val/val_annotations.txt"):
            return self._val_records_official()
        folders = [f for f in self._storage.listdir("val") if self._storage.isdir(f"val/{f}") and f != "images"]
        if not folders:
            raise DatasetError(
                f"{self.describe('val')}: expected val/val_annotations.txt with val/images/, "
                "or class folders val/<wnid>/."
            )
        self._check_class_folders("val", folders)
        records = []
        for wnid in self.classes:
            if self._storage.isdir(f"val/{wnid}"):
                records.extend(self._class_folder_records("val", wnid))
        return records

    def _val_records_official(self):
        ann_rel = "val/val_annotations.txt"
        where = self.describe(ann_rel)
        if not self._storage.isdir("val/images"):
            raise DatasetError(f"{self.describe('val/images')}: missing; {where} labels images in it.")
        images = {n for n in self._storage.listdir("val/images") if _is_image(n)}
        records, seen = [], set()
        for lineno, fields in _parse_rows(self._storage.read(ann_rel).decode(), where, 6):
            name, wnid = fields[0], fields[1]
            if wnid not in self.classes:
                self._problem(f"{where} line {lineno}: {name} is labelled {wnid}, which is not in wnids.txt.")
                continue
            if name in seen:
                self._problem(f"{where} line {lineno}: {name} is annotated twice.")
                continue
            seen.add(name)
            if name not in images:
                self._problem(f"{self.describe('val/images/' + name)}: missing, but annotated in {where} line {lineno}.")
                continue
            box = _box(fields[2:], where, lineno)
            records.append(Record(name, f"val/images/{name}", self.classes.index(wnid), wnid, box))
        for name in sorted(images - seen):
            self._problem(f"{self.describe('val/images/' + name)}: has no line in {where}, so no label.")
        return records

    def _test_records(self):
        folder = "test/images" if self._storage.isdir("test/images") else "test"
        return [
            Record(n, f"{folder}/{n}", -1, "", NO_BOX) for n in self._storage.listdir(folder) if _is_image(n)
        ]


def select(records, classes=None, per_class=None):
    """Records of a subset of classes (wnids, indices, or an int n = the first n classes)
    and at most ``per_class`` images of each, in the original order. Labels are kept."""
    if classes is not None:
        if isinstance(classes, int):
            wanted = set(range(classes))
            records = [r for r in records if r.label in wanted]
        else:
            classes = list(classes)
            wanted = {c for c in classes if isinstance(c, str)} | {r.wnid for r in records if r.label in classes}
            records = [r for r in records if r.wnid in wanted]
    if per_class is not None:
        if per_class < 1:
            raise ValueError(f"per_class must be at least 1. Received: {per_class=}")
        counts = {}
        kept = []
        for r in records:
            counts[r.label] = counts.get(r.label, 0) + 1
            if counts[r.label] <= per_class:
                kept.append(r)
        records = kept
    return records
