"""The ``fedpetuning`` baseline: ``train.run`` in process, ``flower.run_simulation_engine`` on Flower's
Simulation Engine (the averaging in ``fedavg``)."""
