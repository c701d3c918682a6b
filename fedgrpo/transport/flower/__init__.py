"""FedGRPO on Flower: the app (``apps``), its record codec (``codec``), the transport and launchers.

Importing this package needs ``flwr`` (``pip install fedgrpo[flower]``); the in-process transport
does not.
"""
