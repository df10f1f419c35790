"""tiny_keras: reproductions of five Tiny ImageNet papers in Keras 3, on TensorFlow, JAX or PyTorch.

Mechanisms live in one place each:

- ``tiny_keras.data``     Tiny ImageNet layout (folder or zip), TFDS builder, tf.data pipelines
- ``tiny_keras.augment``  ImageDataGenerator-equivalent and the papers' own transforms
- ``tiny_keras.models``   model builders for every paper, with a registry
- ``tiny_keras.schedules`` learning-rate schedules; ``tiny_keras.callbacks`` the callbacks over them
- ``tiny_keras.recipe``    what a run computes, as data; ``tiny_keras.engine`` the engine that runs it
  (``tiny_keras.train``: its entry points), a ``Session`` saying how
- ``tiny_keras.recipes``   every paper's recipes, figures and readings; ``tiny_keras.reproduce`` their command line
- ``tiny_keras.evaluate``  predictions, top-k, ensembles; ``tiny_keras.report`` their tables and files
- ``tiny_keras.runs``      the run folder: its file names and readers
- ``tiny_keras.localization`` paper2's object localiser: boxes, matching loss, detection metrics
- ``tiny_keras.backend``   the Keras backend of the process; TensorFlow imported only where used
"""

__version__ = "0.1.0"

from tiny_keras import _startup  # noqa: E402

_startup.import_tensorflow()  # on the TensorFlow backend, before Keras: its start-up notices held back where asked

# Importing the package registers its Keras objects (preprocessing and augmentation
# layers, model blocks, losses, metrics, the localiser's matching loss, the learning-rate
# schedule a run's optimizer is saved with), so saved models load with keras.models.load_model.
from tiny_keras import augment, localization, losses, metrics, models, schedules  # noqa: E402

__all__ = ["augment", "localization", "losses", "metrics", "models", "schedules"]
