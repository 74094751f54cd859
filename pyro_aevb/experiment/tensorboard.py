"""
TensorBoard event files for a run (``pyro-aevb train --log tensorboard``), under ``RUN/tensorboard``:
the bounds and log p(x) at every evaluation, the training loss between evaluations, and the
reconstruction figure. The ``tensorboard`` package is an optional extra
(``pip install pyro-aevb[tensorboard]``), imported only here, when a run asks for it.
"""

import io

import numpy as np

from pyro_aevb.errors import ConfigError

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger:
    """
    Writes a run's scalars and figures as TensorBoard events.

    :param path: the folder of the event files.
    :param int loss_every: steps over which the training loss is averaged before it is written.
    """

    def __init__(self, path, loss_every=50):
        try:  # deferred: the optional tensorboard package, needed only by a run that asks for it
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--log tensorboard needs the tensorboard package: pip install 'pyro-aevb[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(path))
        self.loss_every = loss_every
        self._losses = []

    def loss(self, samples, value):
        """One step's training loss (the N-scaled negative bound); their mean is written every ``loss_every`` steps."""
        self._losses.append(value)
        if len(self._losses) >= self.loss_every:
            self.writer.add_scalar("train/loss", float(np.mean(self._losses)), samples)
            self._losses = []

    def evaluation(self, samples, metrics):
        """The bounds and log p(x) of an evaluation (a row of ``metrics.csv``), by the samples seen."""
        for key, value in metrics.items():
            if key not in ("samples", "steps", "seconds") and isinstance(value, float):
                split, _, name = key.partition("_")
                self.writer.add_scalar(f"{name}/{split}", value, samples)
        self.writer.flush()

    def figure(self, tag, draw, samples):
        """The figure that ``draw(file)`` writes as a PNG, as an image."""
        from PIL import Image  # deferred: slow to import, and only the TensorBoard figures need it

        buffer = io.BytesIO()
        draw(buffer)
        buffer.seek(0)
        image = np.asarray(Image.open(buffer).convert("RGB"))
        self.writer.add_image(tag, image, samples, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()
