"""A simulated federation on Flower's Simulation Engine, started from this process (Ray workers host
the virtual clients): the deployed ServerApp and ClientApp, served from the seeded split.

The ServerApp holds the whole split (server data, label audit) as in an in-process run; each virtual
node's ``partition-id`` picks ``client-<id>`` of the same split, and all virtual clients in one Ray
worker share one loaded base model (their adapters sit on it). The baselines' Flower runs use
:func:`simulate` and :func:`virtual_client_config` with their own apps.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedgrpo.client import Client
from fedgrpo.config import FedGRPOConfig, load_config_text
from fedgrpo.data import client_name
from fedgrpo.flower.client_app import client_for, make_client_app
from fedgrpo.flower.transport import FlowerTransport
from fedgrpo.simulation.data import build_data

# The server side (fedgrpo.flower.launch, fedgrpo.flower.server_app, the split, TRL) is imported in the
# functions that run it: Ray workers import this module to call virtual_client, and need none of it.

log = logging.getLogger(__name__)


def run_simulation_engine(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """The whole FedGRPO run on Flower's Simulation Engine (Ray backend) with N virtual clients."""
    from fedgrpo.flower.launch import absolute_paths
    from fedgrpo.flower.server_app import make_server_app

    cfg = absolute_paths(cfg)
    server_app = make_server_app(cfg, resume, serve=serve_simulation)
    return simulate(cfg, server_app, make_virtual_client_app(cfg.to_yaml()))


def make_virtual_client_app(config_text: str) -> ClientApp:
    """The deployed ClientApp serving the seeded split's clients (:func:`virtual_client`)."""
    return make_client_app(config_text, find_client=virtual_client)


def serve_simulation(config: FedGRPOConfig, grid: Grid, resume: bool) -> None:
    """The simulation's server side over Flower: the seeded split, each client known by its profile."""
    from fedgrpo.simulation.in_process import run_on_split

    expected = min(config.flower.num_supernodes or config.data.num_clients, config.data.num_clients)
    transport = FlowerTransport(grid, config.flower, expected, identity="profile")
    run_on_split(config, transport, build_data(config), resume)


def virtual_client(cfg: FedGRPOConfig, node: dict[str, Any]) -> Client:
    """A virtual node's client: ``client-<partition-id>`` of the seeded split (a node config with
    ``data-file`` is served as a deployed organisation's)."""
    if "data-file" in node or "partition-id" not in node:
        return client_for(cfg, node)
    name = client_name(int(node["partition-id"]))
    clients = _simulated_clients(cfg.to_yaml())
    if name not in clients:
        raise LookupError(f"virtual node {node['partition-id']} has no client: {name} is not available")
    return clients[name]


@functools.cache
def _simulated_clients(cfg_yaml: str) -> dict[str, Client]:
    """Every client of the seeded split, built once per process: one base model, shared."""
    from fedgrpo.simulation.clients import PRIVACY_STATE, build_clients  # heavy (torch, transformers)

    cfg = load_config_text(cfg_yaml, trl_checks=False)
    # Ray may route a client's messages to different worker processes: its privacy cache and ledger
    # live in a state file (one per client) so every process sees the same ones.
    return {c.name: c for c in build_clients(cfg, build_data(cfg), cfg.output_dir / PRIVACY_STATE)}


def virtual_client_config(config_text: str) -> FedGRPOConfig:
    """A virtual client's config in its Ray worker (the simulation's YAML), its torch threads set.

    A baseline's ClientApp caches what it builds from this per worker (``functools.cache``): Flower
    calls the app once per message, and a worker serves many."""
    import torch

    cfg = load_config_text(config_text, trl_checks=False)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    return cfg


def simulate(cfg: FedGRPOConfig, server_app: ServerApp, client_app: ClientApp) -> dict[str, Any]:
    """A ServerApp and ClientApp pair on the Simulation Engine, per the ``flower`` section; returns the
    ``results.json`` the ServerApp wrote (each baseline brings its own pair)."""
    from fedgrpo.flower.launch import run_results

    fl = cfg.flower
    n = fl.num_supernodes or cfg.data.num_clients
    init_args: dict[str, Any] = {"logging_level": "error", "log_to_driver": True}
    if fl.ray_cpus:
        init_args["num_cpus"] = fl.ray_cpus
    backend = {"client_resources": {"num_cpus": fl.client_cpus, "num_gpus": 0.0}, "init_args": init_args}
    log.info("Flower Simulation Engine: %d virtual clients, %s CPU each", n, fl.client_cpus)
    run_simulation(server_app, client_app, n, backend_config=backend)
    return run_results(cfg)
