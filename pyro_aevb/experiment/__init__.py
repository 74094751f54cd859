"""
The machinery that runs experiments, apart from the paper's ideas: the training loop
(:mod:`~pyro_aevb.experiment.train`), run folders and checkpoints (:mod:`~pyro_aevb.experiment.rundir`,
:mod:`~pyro_aevb.experiment.checkpoint`), data-parallel training (:mod:`~pyro_aevb.experiment.distributed`),
the evaluation of a trained run (:mod:`~pyro_aevb.experiment.evaluate`), the paper's figures
(:mod:`~pyro_aevb.experiment.reproduce`, :mod:`~pyro_aevb.experiment.plots`) and the command line
(:mod:`~pyro_aevb.experiment.cli`).
"""
