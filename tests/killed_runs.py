"""A killed run, for the resume tests (this process's and other backends' processes')."""
import keras


class Interrupt(Exception):
    pass


class KillAt(keras.callbacks.Callback):
    """Raises in the middle of ``epoch`` (after its first batch): a killed run."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch
        self._current = None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._current == self.epoch:
            raise Interrupt(f"killed in epoch {self.epoch}")
