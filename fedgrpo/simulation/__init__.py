"""Everything only a simulated federation uses, where the experimenter holds every party's data.

``data`` (the seeded split from the config, stand-in files for a deployment demo), ``partition``
(how the split is cut), ``clients`` (simulated clients and their experts), ``adversaries`` (lying
clients), ``audit`` (the label audit behind ``fed/reward_correctness``), ``in_process`` (a whole run
in this process) and ``flower`` (the same run on Flower's Simulation Engine). Deployment code never
imports this package (``tests/test_layout.py``).
"""
