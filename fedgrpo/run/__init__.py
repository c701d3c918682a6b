"""A run's server side, assembled once: config -> parts (``assemble``), TRL's trainer (``trl``), the
metrics (``metrics``), the held-out evaluation (``evaluate``) and the run itself (``experiment``).
A simulation's data, clients and label audit come from :mod:`fedgrpo.simulation`."""
