"""
Watching a run: callbacks at every evaluation (one returning False stops the run with a checkpoint,
and resuming continues it exactly), and TensorBoard event files with the bounds, the training loss
and the reconstruction figure.
"""

import numpy as np
import pytest
import torch

from pyro_aevb import TrainConfig, train

TINY = dict(batch_size=20, hidden=8, latent_dim=2, eval_train_points=20, checkpoint_every=1000, eval_points=5)


def _data():
    return (np.random.RandomState(0).rand(110, 1, 2, 3) > 0.5).astype(np.float32)


def test_callbacks_see_every_evaluation_and_can_stop_the_run(tmp_path):
    seen = []

    def record(samples, metrics):
        seen.append((samples, metrics["test_lower_bound"]))

    def stop_at_third(samples, metrics):
        return len(seen) < 3

    config = TrainConfig(samples=2000, **TINY)
    with pytest.warns(UserWarning, match="a callback stopped the run"):
        train(config, out=tmp_path / "parts", data=_data(), callbacks=[record, stop_at_third], progress=False)
    assert len(seen) == 3 and all(np.isfinite(bound) for _, bound in seen)
    stopped_at = seen[-1][0]
    assert torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=True)["samples"] == stopped_at
    train(None, out=tmp_path / "parts", resume=True, data=_data(), callbacks=[record], progress=False)
    whole = []
    train(config, out=tmp_path / "whole", data=_data(), callbacks=[lambda s, m: whole.append((s, m["test_lower_bound"]))],
          progress=False)
    assert seen == whole, "the stopped and resumed run evaluated otherwise than the uninterrupted one"


def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(TrainConfig(samples=2000, log="tensorboard", **TINY), out=tmp_path / "run", data=_data(), progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"lower_bound/train", "lower_bound/test", "train/loss"} <= set(tags["scalars"])
    assert "reconstructions" in tags["images"]
    # 2000 samples of 20: 100 steps, the loss written every 50
    assert [e.step for e in events.Scalars("train/loss")] == [1000, 2000]
    assert len(events.Scalars("lower_bound/test")) == len(events.Images("reconstructions")) == 5
