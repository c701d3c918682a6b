"""FedGRPO: improve a server language model with GRPO from scalar rewards of private domain clients.

Where things are:
  fedgrpo.selection   expert selection (which clients judge a question)
  fedgrpo.client      client side: private data and evaluation of candidates
  fedgrpo.objective   the federated group-relative advantage
  fedgrpo.federation  the server's side: routing, reply checks, the TRL reward function
  fedgrpo.transport   how requests and replies travel (in-process; Flower later)
  fedgrpo.data        domains, client partitions, held-out sets
  fedgrpo.trainer     a whole run on TRL's GRPOTrainer
  fedgrpo.cli         the ``fedgrpo`` command
"""

__version__ = "0.1.0"
