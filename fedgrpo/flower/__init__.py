"""FedGRPO on Flower, in Flower's own layout: ``server_app`` (the run over a FlowerTransport),
``client_app`` (an organisation's client), ``codec`` (protocol messages as records), ``transport``,
``launch`` (the Deployment Engine; the Simulation Engine is :mod:`fedgrpo.simulation.flower`) and
``certs`` (test TLS certificates and SuperNode keys).

Importing this package needs ``flwr`` (``pip install fedgrpo[flower]``); in-process runs do not.
"""
