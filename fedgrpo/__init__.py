"""FedGRPO: improve a server language model with GRPO from scalar rewards of private domain clients.

Where things are (the method, then the wiring):
  fedgrpo.selection   expert selection: which clients judge a question (the confidence graph)
  fedgrpo.client      client side: private data, answer- and model-based scoring (dual evaluation)
  fedgrpo.method      the federated group-relative advantage, aggregation, answers, prompting
  fedgrpo.server      the server's rounds: exchange, rewards -> advantages, competence queries
  fedgrpo.protocol    the wire messages, their one encoding and every check of a reply
  fedgrpo.transport   how messages travel in process; fedgrpo.flower: the Flower apps
  fedgrpo.data        domains, exact scoring, each party's files; fedgrpo.models: loading a model
  fedgrpo.run         a run's server side assembled from the config on TRL's GRPOTrainer
  fedgrpo.algorithms  FedGRPO and the baselines behind one registry (``method=``)
  fedgrpo.simulation  a simulated federation only: the seeded split, simulated clients, liars, the audit
  fedgrpo.accel       the CPU speed levers (same numbers out); fedgrpo.storage: files, checkpoints
  fedgrpo.config      the one typed config; fedgrpo.suite: many runs and their report
  fedgrpo.cli         the ``fedgrpo`` command
"""

__version__ = "0.1.0"
