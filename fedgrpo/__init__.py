"""FedGRPO: improve a server language model with GRPO from scalar rewards of private domain clients.

Where things are (the method, then the wiring):
  fedgrpo.selection   expert selection: which clients judge a question (the confidence graph)
  fedgrpo.client      client side: private data, answer- and model-based scoring (dual evaluation)
  fedgrpo.method.objective   the federated group-relative advantage
  fedgrpo.protocol    the wire messages and every check of a reply
  fedgrpo.server      the server's rounds: exchange, rewards -> advantages, competence queries
  fedgrpo.transport   how messages travel (in-process); fedgrpo.flower: the Flower apps
  fedgrpo.data        domains, scoring, each party's files
  fedgrpo.run         a run's server side assembled from the config on TRL's GRPOTrainer
  fedgrpo.accel       the CPU speed levers (same numbers out); fedgrpo.storage: the run folder
  fedgrpo.simulation  a simulated federation: the seeded split, simulated clients, the label audit
  fedgrpo.algorithms  FedGRPO and the baselines behind one registry (``method=``)
  fedgrpo.cli         the ``fedgrpo`` command
"""

__version__ = "0.1.0"
