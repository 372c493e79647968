"""The paper's experiments and sweeps, on top of :mod:`deep.train` and :mod:`deep.evaluate`.

* :mod:`~deep.experiments.manifest`: the one results-root and manifest schema, ``run_command`` and the
  paper's constants; torch-free (the only part of ``deep`` that :mod:`paper_figures` imports);
* :mod:`~deep.experiments.registry`: every figure's and table's experiment and its smoke/cpu/paper presets,
  as data;
* :mod:`~deep.experiments.runner`: ``run_experiment`` / ``run_all`` (train, evaluate, write the manifest);
* :mod:`~deep.experiments.standalone`: the experiments outside the deep trainer (Fig. 4's linear VAE,
  Table 1's parameter counts);
* :mod:`~deep.experiments.sweep`: a beta-VAE sweep from one TrainConfig (``mrvae-cli deep sweep``).

Import direction: experiments -> train / evaluate -> models -> data; this package's ``__init__`` imports
nothing.
"""
