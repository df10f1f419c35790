"""Shared fixtures: a miniature Tiny ImageNet in the official layout, and the real one if present."""
import io
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parent.parent

# Three real wnids, written to wnids.txt out of sorted order on purpose: indices must
# follow sorted order (n01443537 -> 0, n01629819 -> 1, n01641577 -> 2), not file order.
FIXTURE_WNIDS = ["n01641577", "n01443537", "n01629819"]
FIXTURE_WORDS = {
    "n01443537": "goldfish, Carassius auratus",
    "n01629819": "European fire salamander, Salamandra salamandra",
    "n01641577": "bullfrog, Rana catesbeiana",
    "n09999999": "not a fixture class",
}
TRAIN_PER_CLASS = 4
VAL_PER_CLASS = 2
TEST_IMAGES = 3
# One colour per sorted class index: a decoded image's mean colour tells its true class.
CLASS_COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], np.uint8)
CLASS_GRAYS = np.array([60, 128, 220], np.uint8)  # the same for grayscale JPEGs
GRAY_TRAIN_FILE = "n01629819_1.JPEG"  # the one grayscale JPEG


def fixture_image(label, k, gray=False):
    """A 64x64 image of class ``label``: its class colour plus a small pattern."""
    rng = np.random.default_rng(1000 * label + k)
    image = np.empty((64, 64, 3), np.uint8)
    image[:] = CLASS_COLOURS[label]
    image[8 + k: 20 + k, 10:30] = rng.integers(0, 255, 3, dtype=np.uint8)
    if gray:
        plane = np.full((64, 64), CLASS_GRAYS[label], np.uint8)
        plane[8 + k: 20 + k, 10:30] = rng.integers(0, 255, dtype=np.uint8)
        return Image.fromarray(plane, mode="L")
    return Image.fromarray(image)


def jpeg_bytes(image):
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_fixture(root, reorganised_val=False):
    """Write the miniature dataset to ``root/tiny-imagenet-200``; return that folder."""
    base = pathlib.Path(root) / "tiny-imagenet-200"
    sorted_wnids = sorted(FIXTURE_WNIDS)
    (base).mkdir(parents=True)
    (base / "wnids.txt").write_text("".join(w + "\n" for w in FIXTURE_WNIDS))
    (base / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in FIXTURE_WORDS.items()))
    for wnid in FIXTURE_WNIDS:
        label = sorted_wnids.index(wnid)
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        lines = []
        for k in range(TRAIN_PER_CLASS):
            name = f"{wnid}_{k}.JPEG"
            (folder / name).write_bytes(jpeg_bytes(fixture_image(label, k, gray=name == GRAY_TRAIN_FILE)))
            lines.append(f"{name}\t{k}\t{k + 1}\t{40 + k}\t{50 + k}\n")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(lines))
    annotations = []
    for i in range(VAL_PER_CLASS * len(FIXTURE_WNIDS)):
        wnid = FIXTURE_WNIDS[i % len(FIXTURE_WNIDS)]
        label = sorted_wnids.index(wnid)
        name = f"val_{i}.JPEG"
        data = jpeg_bytes(fixture_image(label, 10 + i))
        box = (i, 2 * i, 30 + i, 40 + i)
        if reorganised_val:
            folder = base / "val" / wnid / "images"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
            with open(base / "val" / wnid / f"{wnid}_boxes.txt", "a") as f:
                f.write(f"{name}\t" + "\t".join(map(str, box)) + "\n")
        else:
            (base / "val" / "images").mkdir(parents=True, exist_ok=True)
            (base / "val" / "images" / name).write_bytes(data)
            annotations.append(f"{name}\t{wnid}\t" + "\t".join(map(str, box)) + "\n")
    if not reorganised_val:
        (base / "val" / "val_annotations.txt").write_text("".join(annotations))
    (base / "test" / "images").mkdir(parents=True)
    for i in range(TEST_IMAGES):
        (base / "test" / "images" / f"test_{i}.JPEG").write_bytes(jpeg_bytes(fixture_image(i % 3, 20 + i)))
    return base


def zip_folder(folder, zip_path):
    """Zip ``folder`` the way the official archive is laid out (folder name as the top entry)."""
    folder = pathlib.Path(folder)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            arcname = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            zf.write(path, arcname + ("/" if path.is_dir() else ""))
    return pathlib.Path(zip_path)


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("fixture"))


@pytest.fixture(scope="session")
def fixture_zip(fixture_root, tmp_path_factory):
    return zip_folder(fixture_root, tmp_path_factory.mktemp("fixture_zip") / "tiny-imagenet-200.zip")


@pytest.fixture
def fixture_copy(fixture_root, tmp_path):
    """A private copy of the fixture folder that a test may damage."""
    return pathlib.Path(shutil.copytree(fixture_root, tmp_path / "tiny-imagenet-200"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Decoded-image caches go to a per-session temporary folder, never ~/.cache."""
    monkeypatch.setenv("TINY_KERAS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _cpu_without_bfloat16(monkeypatch):
    """In-process runs see this machine's CPU without its bfloat16 flags (AMX-BF16,
    AVX512-BF16), so "auto" precision is float32 on every machine the suite runs on and
    their expectations hold everywhere; the rule itself is tested with injected flags
    (test_train.py). Scripts run in a fresh process (``run_python``) see the real CPU, as a
    user's would."""
    from tiny_keras import backend

    read = backend.cpu_flags
    machine = frozenset(f for f in read() if not f.startswith("amx") and f != "avx512_bf16")
    monkeypatch.setattr(backend, "cpu_flags", lambda path=None: machine if path is None else read(path))


# Added to XLA_FLAGS in the tests' JAX processes. On JAX every weight shape a model builds is
# its own compiled initializer, about 1 s of XLA's CPU compiler each at its default optimisation
# level on a 2-core CPU; at level 0 a fifth of that. Measured on tests/backend_cases.py (every
# registered model, the augmentation, a saved model's logits, evaluate's test-time
# augmentation): 86 s instead of 225 s on one core, and 61 of its 63 arrays bit for bit the
# same (the others: a sum of weight changes after one SGD step, 0.5% apart, and 1e-9).
JAX_TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def run_python(*args, timeout=900, env=None):
    """``python ARGS`` in a fresh process with this checkout importable (and ``env`` added to
    the environment, e.g. ``{"KERAS_BACKEND": "jax"}``; a JAX process also gets
    ``JAX_TEST_XLA_FLAGS``); its CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    if env.get("KERAS_BACKEND") == "jax":
        env["XLA_FLAGS"] = " ".join(filter(None, (env.get("XLA_FLAGS"), JAX_TEST_XLA_FLAGS)))
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def run_script(script, *args):
    """Run ``reproductions/SCRIPT ARGS``."""
    return run_python(REPO / "reproductions" / script, *args)


def real_dataset_path():
    """The real archive: ``$TINY_IMAGENET``, or ../shared/data/tiny-imagenet-200.zip beside the checkout."""
    candidates = [os.environ.get("TINY_IMAGENET"), REPO.parent / "shared" / "data" / "tiny-imagenet-200.zip"]
    for c in candidates:
        if c and os.path.exists(c):
            return str(c)
    return None


requires_real_data = pytest.mark.skipif(
    real_dataset_path() is None,
    reason="real Tiny ImageNet not found: set $TINY_IMAGENET or put it at ../shared/data/tiny-imagenet-200.zip",
)


@pytest.fixture(scope="session")
def real_dataset():
    path = real_dataset_path()
    if path is None:
        pytest.skip("real Tiny ImageNet not found ($TINY_IMAGENET or ../shared/data/tiny-imagenet-200.zip)")
    return path
