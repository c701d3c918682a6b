"""A run, assembled once: config -> parts (``assemble``, ``clients``), TRL's trainer (``trl``), the
metrics (``metrics``, and ``audit`` in simulations), and the run itself (``experiment``)."""
