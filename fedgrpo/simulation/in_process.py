"""A simulated federation's server side: the seeded split's server data, the label audit, and the
whole run in this process with the simulated clients behind an in-process transport."""

from __future__ import annotations

from typing import Any

from fedgrpo.config import FedGRPOConfig
from fedgrpo.run.assemble import ServerData
from fedgrpo.run.experiment import run
from fedgrpo.server.canaries import with_canaries
from fedgrpo.simulation.audit import RoutingAudit
from fedgrpo.simulation.clients import PRIVACY_STATE, build_clients
from fedgrpo.simulation.data import build_data, split_summary
from fedgrpo.simulation.partition import FederatedSplit
from fedgrpo.storage.run_folder import check_output_dir
from fedgrpo.transport import InProcessTransport, Transport


def run_in_process(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """A simulation in this process: the seeded split, its clients behind an in-process transport."""
    check_output_dir(cfg, resume)
    split = build_data(cfg)
    # with clients.privacy, each client's cache and ledger persist in the run folder: a resumed run
    # goes on with them (the same released values, the budget already spent)
    clients = build_clients(cfg, split, cfg.output_dir / PRIVACY_STATE)
    transport = InProcessTransport(clients, cfg.flower.max_message_bytes, cfg.flower.rejoin_interval_s)
    return run_on_split(cfg, transport, split, resume)


def run_on_split(
    cfg: FedGRPOConfig, transport: Transport, split: FederatedSplit, resume: bool = False
) -> dict[str, Any]:
    """A run whose experimenter holds the whole seeded split: the server side, plus the label audit."""
    return run(
        cfg,
        transport,
        server_data(split, cfg.federation.canaries.share),
        resume=resume,
        audit=RoutingAudit(split),
        client_domains=split.client_domains,
        split_info=split_summary(split),
    )


def server_data(split: FederatedSplit, canary_share: float = 0.0) -> ServerData:
    """The server's share of the split: the training questions, the auxiliary and held-out sets, and
    the canaries (among the prompts at ``canary_share``)."""
    prompts, canaries = with_canaries(split.train_questions, split.canaries, canary_share)
    return ServerData(prompts, split.auxiliary, split.heldout, canaries)
