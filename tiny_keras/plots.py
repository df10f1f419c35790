"""The papers' analyses as figures: training curves, first-layer filters, t-SNE of the
last hidden layer, best and worst classes, misclassified images, and the distribution
of a layer's outputs over training.

Every kind is a function returning a ``matplotlib.figure.Figure`` (made without pyplot,
so nothing global changes and no display is needed) and :func:`save` writes it at an
exact pixel size:

========================  =========================================================  ===================
function                  what it shows                                               paper
========================  =========================================================  ===================
:func:`plot_curves`       loss and top-1 per epoch, train and val, stage boundaries,  all
                          learning rate on a second axis; several runs overlaid
                          (a study's workdir) compare their val curves                paper2 figs 11-13
:func:`plot_filters`      the first conv layer's kernels as an RGB grid               paper2 fig 14, paper5 fig 4
:func:`plot_tsne`         t-SNE of the penultimate layer's features, by class         paper5 fig 2
:func:`plot_classes`      the k best and k worst classes with example images          paper2 fig 7, paper5 figs 5-6
:func:`plot_mistakes`     misclassified images with their true and predicted names    paper2 fig 8
:func:`plot_activations`  percentile bands of the last conv block's and the logits'  paper2 figs 9-10
                          outputs per epoch
:func:`plot_boxes`        a localiser's held-out images: ground truth, accepted and   paper2 fig 15
                          rejected boxes (a ``tiny_keras.localization`` run)
========================  =========================================================  ===================

The data they draw come from a run folder, read by ``tiny_keras.runs``:
``runs.read_history`` joins the stages' ``history.csv`` files with their boundaries,
``runs.read_activations`` the stages' ``activations.json`` (recorded by
``tiny_keras.callbacks.ActivationPercentiles`` for every run, ``activation_samples``
images), and a trained model gives :func:`first_conv_layer`, :func:`penultimate_features`
and, through ``tiny_keras.evaluate``, the probabilities behind the per-class plots.
:func:`make_plot` does all of it from paths; ``tools/plot.py`` is its command line.

    >>> from tiny_keras import plots, runs
    >>> fig = plots.plot_curves(runs.read_history("runs/paper1/resnet"))  # doctest: +SKIP
    >>> plots.save(fig, "curves.png", size=(1200, 800))                     # doctest: +SKIP
"""
import math
import os

import keras
import numpy as np

from tiny_keras import evaluate, files, localization, runs
from tiny_keras.models import ImageClassifier

DPI = 100  # fixed: a figure of W x H pixels is W / DPI x H / DPI inches
DEFAULT_SIZE = (1200, 800)  # pixels (width, height)
KINDS = ("curves", "filters", "tsne", "classes", "mistakes", "activations")
NEEDS_DATA = ("tsne", "classes", "mistakes")  # kinds that run the model on images
NEEDS_RUN = ("curves", "activations")  # kinds that read a run folder's records
BOX_KINDS = ("boxes",)  # kinds of a localisation run (tiny_keras.localization); they need data too
# The bands TensorBoard's distributions draw (and ActivationPercentiles records):
# min..max, mu -+ 1.5 sigma, -+ sigma, -+ 0.5 sigma for a normal distribution, and the median.
BANDS = ((0, 100), (7, 93), (16, 84), (31, 69))
TSNE_MAX_PERPLEXITY = 30.0  # scikit-learn's default, used when there are enough images
TSNE_PCA_DIMS = 50  # features are reduced to this many principal components first (standard practice)


class PlotError(ValueError):
    """A plot that cannot be drawn from what it was given (names the missing thing)."""


# -- figures ----------------------------------------------------------------------------------
def new_figure(size=DEFAULT_SIZE, **kwargs):
    """A ``Figure`` of ``size`` = (width, height) pixels at :data:`DPI`, constrained layout."""
    # matplotlib (optional): loaded when a figure is drawn, not when the module is imported
    from matplotlib.figure import Figure

    width, height = _check_size(size)
    kwargs.setdefault("layout", "constrained")
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI, **kwargs)


def _check_size(size):
    width, height = size
    if int(width) != width or int(height) != height or width < 100 or height < 100:
        raise ValueError(f"size must be two whole numbers of pixels, at least 100 each. Received: {size=}")
    return int(width), int(height)


def save(fig, path, size=DEFAULT_SIZE):
    """Write ``fig`` to ``path`` (format from the extension, e.g. ``.png``) at exactly
    ``size`` = (width, height) pixels, atomically (a temporary file renamed into place)."""
    width, height = _check_size(size)
    fig.set_size_inches(width / DPI, height / DPI)
    path = os.fspath(path)
    ext = os.path.splitext(path)[1]
    if not ext:
        raise ValueError(f"{path}: give the file an extension (.png, .pdf, .svg) to choose its format")
    with files.atomic_path(path, suffix=ext) as tmp:  # the extension chooses the format
        # No bbox_inches="tight": it would crop the figure and change its pixel size.
        fig.savefig(tmp, dpi=DPI, facecolor="white")
    return path


# -- models -----------------------------------------------------------------------------------
def _run_records(read, path):
    """``read(path)`` (a ``tiny_keras.runs`` reader), its errors as :class:`PlotError`."""
    try:
        return read(path)
    except runs.RunRecordError as err:
        raise PlotError(str(err)) from None


def load_model(path):
    """The Keras model at ``path`` (a ``.keras`` file or run folder), without its optimizer."""
    file = _run_records(runs.model_path, path)
    if os.path.isdir(file):
        raise PlotError(f"{file} is a SavedModel: this plot needs the Keras model (a .keras file or run folder)")
    try:
        return evaluate.load_keras_model(file)
    except evaluate.ModelLoadError as err:
        raise PlotError(str(err)) from None


def network_of(model):
    """The network inside ``model``: an ``ImageClassifier``'s ``network`` (backbone and
    head); any other model is its own network."""
    return model.network if isinstance(model, ImageClassifier) else model


def _walk(layer):
    for child in layer.layers:
        if isinstance(child, keras.Model):
            yield from _walk(child)
        else:
            yield child


def first_conv_layer(model):
    """The first ``Conv2D`` of the model's network, in the order the network runs its layers."""
    for layer in _walk(network_of(model)):
        if isinstance(layer, keras.layers.Conv2D):
            return layer
    raise PlotError(f"{model.name}: no Conv2D layer: the filters plot needs a convolutional network")


def feature_model(model):
    """A model mapping 0..255 images to the penultimate features of an ``ImageClassifier``
    (the input of its classifier layer, ``model.penultimate``: e.g. paper 5's 400-d last
    hidden layer; for paper 3's 1x1-conv classifier, the feature maps), through the model's
    preprocessing, centre crop and resize."""
    if not isinstance(model, ImageClassifier):
        raise PlotError(f"{model.name}: penultimate features need a tiny_keras ImageClassifier (its head "
                        f"known); received a {type(model).__name__}")
    probe = model.backbone_probe("penultimate")
    inputs = keras.Input((None, None, 3), name="images")
    return keras.Model(inputs, probe(model.prepare(inputs, training=False)),
                       name=f"{model.network.name}_features_with_preprocessing")


def penultimate_features(model, images, batch_size=256):
    """Features ``[N, D]`` (float32) of 0..255 ``images`` from :func:`feature_model`."""
    features = feature_model(model).predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(features, np.float32).reshape(len(images), -1)


def predict(path, images, batch_size=256):
    """``(probabilities [N, C], num_classes)`` of the model at ``path`` (``tiny_keras.evaluate``)."""
    try:
        member = evaluate.load_member(_run_records(runs.model_path, path))
    except evaluate.ModelLoadError as err:
        raise PlotError(str(err)) from None
    probabilities = member.predict(images, batch_size=batch_size)
    return probabilities, member.num_classes or probabilities.shape[-1]


# -- small drawing helpers --------------------------------------------------------------------
def _mark_stages(ax, boundaries):
    """Dashed lines where stages start (after the first), each stage's name at the bottom."""
    import matplotlib.transforms as mtransforms  # matplotlib (optional), as in new_figure

    if len(boundaries) < 2:
        return
    trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    for b in boundaries[1:]:
        ax.axvline(b.start + 0.5, color="0.45", linestyle="--", linewidth=1)
    for i, b in enumerate(boundaries):  # just right of where the stage starts
        ax.text(b.start + 0.55 if i else 0.01, 0.01, b.stage, transform=trans if i else ax.transAxes,
                va="bottom", ha="left", fontsize=8, color="0.3")


def _epoch_axis(ax, last_epoch):
    from matplotlib.ticker import MaxNLocator  # matplotlib (optional), as in new_figure

    ax.set_xlabel("epoch (all stages)")
    ax.set_xlim(0.5, max(1, last_epoch) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _line(ax, x, y, **kwargs):
    y = np.asarray(y, float)
    if np.isnan(y).all():
        return None
    marker = "o" if len(x) <= 12 else None  # short runs: the points show
    return ax.plot(x, y, marker=marker, markersize=4, **kwargs)[0]


def _show_image(ax, image, title=None, color=None, fontsize=8):
    ax.imshow(np.asarray(image).astype(np.uint8), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)
    if color:
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(3)


def _blank(ax):
    ax.axis("off")


def _short(text, width=22):
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "\u2026"


# -- curves -----------------------------------------------------------------------------------
def plot_curves(history, title=None, size=DEFAULT_SIZE):
    """Training and validation loss and top-1 per epoch (a localiser's: its loss, and its
    held-out mean IoU and CorLoc), stages marked, learning rate on a second axis.
    ``history``: a ``runs.History``, or ``{name: History}`` to compare several runs (a
    study): then their validation curves (solid) and training curves (dotted)."""
    if isinstance(history, dict):
        return _plot_compare(history, title, size)
    fig = new_figure(size)
    ax_loss, ax_top1 = fig.subplots(1, 2)
    x = history.epoch
    lr = history.get("learning_rate")
    boxes = not np.isnan(history.get("val_mean_iou")).all()  # a localisation run (tiny_keras.localization)
    panels = ((ax_loss, ("loss",), "loss (Eq. 1, matched boxes)" if boxes else "loss (cross-entropy)", 1.0),
              (ax_top1, ("mean_iou", "corloc") if boxes else ("top1",),
               "held-out mean IoU, CorLoc (%)" if boxes else "top-1 accuracy (%)", 100.0))
    for ax, keys, ylabel, scale in panels:
        handles = []
        for key, style in zip(keys, ("-", "--")):
            handles += [_line(ax, x, scale * history.get(key), color="tab:blue", linestyle=style, label=f"train {key}"),
                        _line(ax, x, scale * history.get(f"val_{key}"), color="tab:orange", linestyle=style,
                              label=f"val {key}")]
        _epoch_axis(ax, x.max())
        ax.set_ylabel(ylabel)
        _mark_stages(ax, history.boundaries)
        if not np.isnan(lr).all():
            ax_lr = ax.twinx()
            handles.append(ax_lr.step(x, lr, where="mid", color="0.5", linestyle=":", linewidth=1.5,
                                      label="learning rate")[0])
            if np.nanmin(lr) > 0 and np.nanmax(lr) / np.nanmin(lr) > 20:
                ax_lr.set_yscale("log")
            ax_lr.set_ylabel("learning rate", color="0.4")
            ax_lr.tick_params(axis="y", colors="0.4", labelsize=8)
        handles = [h for h in handles if h is not None]
        ax.legend(handles, [h.get_label() for h in handles], loc="best", fontsize=8)
    fig.suptitle(title or f"{_run_name(history.run)}: training curves")
    return fig


def _run_name(run):
    return os.path.basename(os.path.normpath(run))


def _plot_compare(histories, title, size):
    import matplotlib  # matplotlib (optional), as in new_figure

    fig = new_figure(size)
    ax_loss, ax_top1 = fig.subplots(1, 2)
    colors = matplotlib.colormaps["tab10"]
    for i, (name, h) in enumerate(histories.items()):
        color = colors(i % 10)
        for ax, key, scale in ((ax_loss, "loss", 1.0), (ax_top1, "top1", 100.0)):
            _line(ax, h.epoch, scale * h.get(f"val_{key}"), color=color, label=name)
            _line(ax, h.epoch, scale * h.get(key), color=color, linestyle=":", linewidth=1, label="_nolegend_")
    last = max(h.epoch.max() for h in histories.values())
    for ax, ylabel in ((ax_loss, "loss (cross-entropy)"), (ax_top1, "top-1 accuracy (%)")):
        _epoch_axis(ax, last)
        ax.set_ylabel(ylabel)
    ax_top1.legend(fontsize=8, loc="best")
    fig.suptitle(title or "validation (solid) and training (dotted) curves")
    return fig


# -- filters ----------------------------------------------------------------------------------
def filter_grid(kernel, normalize="filter", pad=1):
    """The kernels ``[kh, kw, in, out]`` tiled as one image ``[H, W, 3]`` in 0..1.

    Three input channels are shown as RGB, any other number as their mean in gray.
    ``normalize="filter"`` stretches each filter to 0..1 on its own (the usual view, as in
    CS231n); ``"global"`` uses one range for all, so the filters' relative strength shows."""
    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim != 4:
        raise PlotError(f"expected a conv kernel [height, width, in, out]; received shape {kernel.shape}")
    if normalize not in ("filter", "global"):
        raise ValueError(f"normalize must be 'filter' or 'global'. Received: {normalize=}")
    kh, kw, cin, cout = kernel.shape
    filters = np.moveaxis(kernel, 3, 0)  # [out, kh, kw, in]
    if cin != 3:
        filters = np.repeat(filters.mean(axis=3, keepdims=True), 3, axis=3)
    if normalize == "filter":
        lo = filters.min(axis=(1, 2, 3), keepdims=True)
        hi = filters.max(axis=(1, 2, 3), keepdims=True)
    else:
        lo, hi = filters.min(), filters.max()
    filters = (filters - lo) / np.maximum(hi - lo, 1e-12)
    cols = int(math.ceil(math.sqrt(cout)))
    rows = int(math.ceil(cout / cols))
    grid = np.ones((rows * (kh + pad) + pad, cols * (kw + pad) + pad, 3))
    for i, f in enumerate(filters):
        r, c = divmod(i, cols)
        grid[pad + r * (kh + pad): pad + r * (kh + pad) + kh, pad + c * (kw + pad): pad + c * (kw + pad) + kw] = f
    return grid


def plot_filters(model, normalize="filter", title=None, size=DEFAULT_SIZE):
    """The first conv layer's filters as an RGB grid (paper2 figure 14, paper5 figure 4)."""
    layer = first_conv_layer(model)
    kernel = np.asarray(layer.kernel.numpy() if hasattr(layer.kernel, "numpy") else layer.kernel)
    kh, kw, cin, cout = kernel.shape
    fig = new_figure(size)
    ax = fig.subplots()
    ax.imshow(filter_grid(kernel, normalize), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    channels = "RGB" if cin == 3 else f"mean of {cin} input channels"
    ax.set_title(f"{cout} filters {kh}x{kw} ({channels}; each stretched to its own range)" if normalize == "filter"
                 else f"{cout} filters {kh}x{kw} ({channels}; one range for all)", fontsize=10)
    fig.suptitle(title or f"first conv layer '{layer.name}'")
    return fig


# -- t-SNE ------------------------------------------------------------------------------------
def tsne_perplexity(n):
    """scikit-learn's default 30, lowered for few images (it must stay below their number)."""
    if n < 2:
        raise PlotError(f"t-SNE needs at least 2 images; received {n}")
    return float(max(1.0, min(TSNE_MAX_PERPLEXITY, (n - 1) / 3.0)))


def tsne_embedding(features, seed=0, perplexity=None):
    """2-d t-SNE (``sklearn.manifold.TSNE``, PCA initialisation) of ``features`` ``[N, D]``;
    features of more than :data:`TSNE_PCA_DIMS` dimensions are first reduced by PCA."""
    # scikit-learn (optional, heavy): loaded only for a t-SNE
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    features = np.asarray(features, np.float64).reshape(len(features), -1)
    n = len(features)
    perplexity = tsne_perplexity(n) if perplexity is None else float(perplexity)
    if not 0 < perplexity < n:
        raise PlotError(f"t-SNE's perplexity must lie between 0 and the number of images ({n}); received {perplexity}")
    if not np.isfinite(features).all():
        raise PlotError("the features hold NaN or infinite values (a diverged model?)")
    if features.shape[1] > TSNE_PCA_DIMS and n > TSNE_PCA_DIMS:
        features = PCA(TSNE_PCA_DIMS, random_state=seed).fit_transform(features)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(features)


def choose_classes(labels, classes=10):
    """The class indices a t-SNE legend names: ``classes`` as an int n (n of the classes
    present, evenly spread over their indices) or a list of indices."""
    present = np.unique(np.asarray(labels))
    if isinstance(classes, (int, np.integer)):
        if classes < 1:
            raise ValueError(f"the number of legend classes must be positive. Received: {classes=}")
        if classes >= len(present):
            return [int(c) for c in present]
        picks = np.linspace(0, len(present) - 1, classes).round().astype(int)
        return [int(present[i]) for i in picks]
    chosen = [int(c) for c in classes]
    missing = [c for c in chosen if c not in present]
    if missing:
        raise PlotError(f"classes {missing} have no images here (present: {len(present)} classes)")
    return chosen


def plot_tsne(embedding, labels, class_names=None, legend=10, title=None, size=DEFAULT_SIZE):
    """t-SNE points coloured by class (paper5 figure 2): the ``legend`` classes (an int n,
    or class indices) in distinct colours and named, the others in gray."""
    import matplotlib  # matplotlib (optional), as in new_figure

    embedding = np.asarray(embedding)
    labels = np.asarray(labels)
    chosen = choose_classes(labels, legend)
    fig = new_figure(size)
    ax = fig.subplots()
    others = ~np.isin(labels, chosen)
    if others.any():
        ax.scatter(embedding[others, 0], embedding[others, 1], s=6, c="0.75", alpha=0.5, linewidths=0,
                   label=f"other classes ({len(np.unique(labels[others]))})")
    cmap = matplotlib.colormaps["tab10" if len(chosen) <= 10 else "tab20"]
    for i, c in enumerate(chosen):
        mask = labels == c
        name = class_names.name(c) if class_names is not None and c < len(class_names) else f"class {c}"
        ax.scatter(embedding[mask, 0], embedding[mask, 1], s=28, color=cmap(i % cmap.N), edgecolors="white",
                   linewidths=0.4, label=_short(name, 28))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{len(labels)} images, {len(np.unique(labels))} classes", fontsize=10)
    fig.legend(loc="outside right upper", fontsize=8, markerscale=1.2, frameon=False)
    fig.suptitle(title or "t-SNE of the penultimate layer's features")
    return fig


# -- per-class results ------------------------------------------------------------------------
def _class_name(class_names, index):
    return class_names.name(index) if class_names is not None and index < len(class_names) else f"class {index}"


def plot_classes(images, labels, probabilities, class_names=None, k=5, samples=4, title=None, size=DEFAULT_SIZE):
    """The ``k`` best and ``k`` worst classes by top-1 (paper2 figure 7, paper5 figures 5-6):
    each a row of ``samples`` of its images (frame: green if classified right, red if not)
    and its accuracy."""
    images, labels = np.asarray(images), np.asarray(labels)
    rows = evaluate.per_class_accuracy(probabilities, labels, class_names)
    best, worst = evaluate.best_and_worst(rows, k)
    predicted = np.argmax(probabilities, axis=-1)
    fig = new_figure(size)
    left, right = fig.subfigures(1, 2, wspace=0.02)
    for sub, chosen, heading in ((left, best, f"{len(best)} best classes"),
                                 (right, worst, f"{len(worst)} worst classes")):
        axes = np.atleast_2d(sub.subplots(len(chosen), samples, squeeze=False))
        for row, r in zip(axes, chosen):
            index = np.flatnonzero(labels == r["index"])[:samples]
            for j, ax in enumerate(row):
                if j < len(index):
                    right_ = predicted[index[j]] == labels[index[j]]
                    _show_image(ax, images[index[j]], color="tab:green" if right_ else "tab:red")
                else:
                    _blank(ax)
            row[0].set_ylabel(f"{_short(r['name'], 18)}\n{r['top1']:.0f}% ({r['images']})", fontsize=8,
                              rotation=0, ha="right", va="center")
        sub.suptitle(heading, fontsize=11)
    fig.suptitle(title or f"validation top-1 per class (frame: green right, red wrong; {len(rows)} classes)")
    return fig


def pick_mistakes(probabilities, labels, n=16):
    """Indices of up to ``n`` misclassified images, most confident mistakes first, one per
    (true, predicted) pair before any pair repeats."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    predicted = np.argmax(probabilities, axis=-1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    first, rest, seen = [], [], set()
    for i in wrong:
        pair = (int(labels[i]), int(predicted[i]))
        (rest if pair in seen else first).append(int(i))
        seen.add(pair)
    return (first + rest)[:n]


def plot_mistakes(images, labels, probabilities, class_names=None, samples=16, title=None, size=DEFAULT_SIZE):
    """Misclassified images with their true and predicted class names (paper2 figure 8)."""
    images, labels, probabilities = np.asarray(images), np.asarray(labels), np.asarray(probabilities)
    picks = pick_mistakes(probabilities, labels, samples)
    fig = new_figure(size)
    wrong = int((np.argmax(probabilities, axis=-1) != labels).sum())
    if not picks:
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, f"no misclassified images among {len(labels)}", ha="center", va="center", fontsize=14)
    else:
        width, height = fig.get_size_inches()
        cols = max(1, min(len(picks), int(math.ceil(math.sqrt(len(picks) * width / height)))))
        rows = int(math.ceil(len(picks) / cols))
        cols = int(math.ceil(len(picks) / rows))  # no emptier last row than needed (16: 4 x 4, not 5 x 4)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, i in zip(axes, picks):
            predicted = int(np.argmax(probabilities[i]))
            confidence = 100 * probabilities[i, predicted]
            _show_image(ax, images[i], f"true: {_short(_class_name(class_names, labels[i]))}\n"
                        f"pred: {_short(_class_name(class_names, predicted))} ({confidence:.0f}%)")
        for ax in axes[len(picks):]:
            _blank(ax)
    fig.suptitle(title or f"misclassified images ({wrong} of {len(labels)}; most confident first)")
    return fig


# -- activations ------------------------------------------------------------------------------
def plot_activations(activations, title=None, size=DEFAULT_SIZE):
    """The distribution of the last conv block's and the logits' outputs per epoch (paper2
    figures 9-10): percentile bands (min-max, 7-93, 16-84, 31-69) and the median."""
    percentiles = list(activations["percentiles"])
    x = activations["epoch"]
    fig = new_figure(size)
    axes = fig.subplots(1, 2)
    for ax, key, color in ((axes[0], "last_block", "tab:orange"), (axes[1], "logits", "tab:blue")):
        values = np.asarray(activations[key])
        for depth, (lo, hi) in enumerate(BANDS):
            if lo in percentiles and hi in percentiles:
                ax.fill_between(x, values[:, percentiles.index(lo)], values[:, percentiles.index(hi)], color=color,
                                alpha=0.18 + 0.14 * depth, linewidth=0,
                                label="min to max" if (lo, hi) == (0, 100) else f"percentiles {lo} to {hi}")
        if 50 in percentiles:
            _line(ax, x, values[:, percentiles.index(50)], color="black", linewidth=1.2, label="median")
        layer = activations.get("layers", {}).get(key, key)
        ax.set_title(f"{'last conv block' if key == 'last_block' else 'logits'} ('{layer}')", fontsize=10)
        _epoch_axis(ax, x.max())
        ax.set_ylabel("output value")
        _mark_stages(ax, activations["boundaries"])
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title or "output distributions over training (fixed validation images)")
    return fig


# -- boxes ------------------------------------------------------------------------------------
def plot_boxes(images, true_corners, pred_corners, scores, threshold=0.5, samples=16, title=None,
               size=DEFAULT_SIZE):
    """Localisation results (paper2 figure 15): the first ``samples`` images with their
    ground-truth box (black, dashed), accepted boxes (confidence >= ``threshold``, green,
    with the confidence) and rejected ones (red, thin). Boxes are corners as fractions of
    the image (``tiny_keras.localization``)."""
    from matplotlib.patches import Rectangle  # matplotlib (optional), as in new_figure

    n = min(samples, len(images))
    fig = new_figure(size)
    width, height = fig.get_size_inches()
    cols = max(1, min(n, int(math.ceil(math.sqrt(n * width / height)))))
    rows = int(math.ceil(n / cols))
    cols = int(math.ceil(n / rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()

    def draw(ax, box, image_shape, **style):
        h, w = image_shape[:2]
        x0, y0, x1, y1 = np.asarray(box, float) * [w, h, w, h] - 0.5  # imshow puts pixel k's centre at k
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, **style))

    for ax, i in zip(axes, range(n)):
        _show_image(ax, images[i])
        for box in np.asarray(true_corners[i]).reshape(-1, 4):
            if box[2] > box[0]:
                draw(ax, box, images[i].shape, edgecolor="black", linestyle="--", linewidth=1.5)
        order = np.argsort(-scores[i])
        for step in order:
            accepted = scores[i][step] >= threshold
            draw(ax, pred_corners[i][step], images[i].shape, edgecolor="limegreen" if accepted else "red",
                 linewidth=2 if accepted else 0.8, alpha=1.0 if accepted else 0.6)
        best = order[0]
        ax.set_title(f"top {scores[i][best]:.2f}, {int((scores[i] >= threshold).sum())} accepted", fontsize=8)
    for ax in axes[n:]:
        _blank(ax)
    fig.suptitle(title or f"held-out images: ground truth (black), accepted (green, confidence >= {threshold:g}) "
                          "and rejected (red) boxes")
    return fig


def _plot_localization_run(path, data, samples, title, size, progress):
    if not os.path.isfile(os.path.join(path, runs.SPLIT)):
        raise PlotError(f"{path}: not a localisation run (no {runs.SPLIT}); the boxes plot takes a folder written "
                        "by reproductions/paper2_localization.py")
    try:
        held_out, options = localization.held_out_split(path, data)
    except ValueError as error:  # a folder an older version wrote, or data that is not the run's
        raise PlotError(str(error)) from None
    model = load_model(os.path.join(path, runs.MODEL))
    corners, scores = localization.decode(model.predict(held_out.images.astype(np.float32), verbose=0))
    return plot_boxes(held_out.images, held_out.corners, corners, scores, options["confidence_threshold"],
                      samples=16 if samples is None else samples, title=title, size=size)


# -- from paths -------------------------------------------------------------------------------
def _legend_classes(spec, class_names):
    """``--classes``: None (10), an int, or wnids / indices -> what :func:`plot_tsne` takes."""
    if spec is None:
        return 10
    if isinstance(spec, (int, np.integer)):
        return int(spec)
    items = [str(s) for s in spec]
    if len(items) == 1 and items[0].isdigit():
        return int(items[0])
    indices = []
    for item in items:
        if item.isdigit():
            indices.append(int(item))
            continue
        if class_names is None or item not in class_names:
            raise PlotError(f"--classes: {item!r} is not a wnid of the model's classes")
        indices.append(class_names.index(item))
    return indices


def _stratified(labels, n, seed):
    """Up to ``n`` indices, as many of each class as fit, chosen at random with ``seed``."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    present = np.unique(labels)
    per_class = max(1, n // len(present))
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in present]
    return np.sort(np.concatenate(picks))


def make_plot(kind, path, data=None, split="val", classes=None, k=5, samples=None, seed=0, size=DEFAULT_SIZE,
              title=None, progress=False):
    """Draw ``kind`` (one of :data:`KINDS`) for ``path`` (a run folder, a reproduction
    workdir for ``curves``, or a ``.keras`` file) on ``data`` (zip or folder; the kinds in
    :data:`NEEDS_DATA`). ``samples``: images per class shown (classes, default 4),
    misclassified images shown (mistakes, 16), images embedded (tsne, 2000)."""
    if kind not in KINDS + BOX_KINDS:
        raise ValueError(f"kind must be one of {KINDS + BOX_KINDS}. Received: {kind=}")
    if kind == "tsne" and not 0 <= seed < 2**32:
        raise PlotError(f"the t-SNE seed must lie in 0..2**32 - 1. Received: {seed=}")
    path = os.fspath(path)
    if kind == "boxes":
        if data is None:
            raise PlotError("the boxes plot runs the localiser on images: give the dataset (--data PATH)")
        return _plot_localization_run(path, data, samples, title, size, progress)
    if kind == "curves":
        workdir_runs = runs.workdir_runs(path)
        if workdir_runs:
            return plot_curves({_run_name(r): _run_records(runs.read_history, r) for r in workdir_runs},
                               title=title, size=size)
        return plot_curves(_run_records(runs.read_history, path), title=title, size=size)
    if kind == "activations":
        return plot_activations(_run_records(runs.read_activations, path), title=title, size=size)
    if kind == "filters":
        return plot_filters(load_model(path), title=title, size=size)
    if data is None:
        raise PlotError(f"the {kind} plot runs the model on images: give the dataset (--data PATH)")
    # tiny_keras.data brings tensorflow_datasets: only the kinds that read images load it
    from tiny_keras import data as data_lib

    file = _run_records(runs.model_path, path)
    split_data = data_lib.load_split(data, split, progress=progress)
    if (split_data.labels < 0).any():
        raise PlotError(f"the {split} split has no labels: use --split val")
    if kind == "tsne":
        index = _stratified(split_data.labels, 2000 if samples is None else samples, seed)
        images, labels = split_data.images[index], split_data.labels[index]
        names = split_data.classes  # the points are named by their (dataset) labels
        legend = choose_classes(labels, _legend_classes(classes, names))  # checked before the features
        embedding = tsne_embedding(penultimate_features(load_model(file), images), seed=seed)
        return plot_tsne(embedding, labels, names, legend, title=title, size=size)
    probabilities, num_classes = predict(file, split_data.images)
    try:
        names = evaluate.resolve_classes(num_classes, split_data.classes)
    except ValueError:
        names = None  # the model's outputs cannot be named: "class i"
    if kind == "classes":
        return plot_classes(split_data.images, split_data.labels, probabilities, names, k=k,
                            samples=4 if samples is None else samples, title=title, size=size)
    return plot_mistakes(split_data.images, split_data.labels, probabilities, names,
                         samples=16 if samples is None else samples, title=title, size=size)
