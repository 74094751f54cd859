"""
The machinery that runs experiments, apart from the paper's ideas: the training loop
(:mod:`~pyro_aevb.experiment.train`; its settings, methods, model building, evaluation schedule and data in
:mod:`~pyro_aevb.experiment.config`, :mod:`~pyro_aevb.experiment.methods`, :mod:`~pyro_aevb.experiment.build`,
:mod:`~pyro_aevb.experiment.schedule` and :mod:`~pyro_aevb.experiment.run_data`; a trained run loaded back by
:mod:`~pyro_aevb.experiment.load`), run folders and checkpoints (:mod:`~pyro_aevb.experiment.rundir`,
:mod:`~pyro_aevb.experiment.checkpoint`, the state they hold :mod:`~pyro_aevb.experiment.state`, files
replaced atomically :mod:`~pyro_aevb.experiment.atomic`), data-parallel training
(:mod:`~pyro_aevb.experiment.distributed`), the evaluation of a trained run
(:mod:`~pyro_aevb.experiment.evaluate`), the paper's experiments (:mod:`~pyro_aevb.experiment.reproduce`,
its runs :mod:`~pyro_aevb.experiment.runs` in worker processes :mod:`~pyro_aevb.experiment.workers`, its
figures :mod:`~pyro_aevb.experiment.figures` and :mod:`~pyro_aevb.experiment.plots`) and the command
line (:mod:`~pyro_aevb.experiment.cli`).
"""
