"""The ``dpsda-fl`` baseline: ``train.run`` in process, ``flower.run_simulation_engine`` on Flower's
Simulation Engine (the server's evolution in ``evolution``, the clients' votes in ``private_evolution``)."""
