"""The FedGRPO ServerApp: the same run as in-process, over a FlowerTransport to the ClientApps.

On the Deployment Engine the server holds only its own files (``server.*``) and knows each client by
the name registered for its SuperNode key; there is no label audit. The Simulation Engine's ServerApp
is this one with the simulation's serving (:mod:`fedgrpo.simulation.flower`: the experimenter holds
the whole seeded split, as in an in-process run).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedgrpo.config import ConfigError, FedGRPOConfig, load_config_text
from fedgrpo.flower.transport import FlowerTransport
from fedgrpo.run.assemble import server_data_from_files
from fedgrpo.run.experiment import run
from fedgrpo.storage.run_folder import attach_log_file, check_output_dir

# how a ServerApp runs the experiment once its run folder is ready: (config, grid, resume)
Serve = Callable[[FedGRPOConfig, Grid, bool], None]


def server_config(run_config: dict) -> FedGRPOConfig:
    """The whole config, fully checked (the ClientApps read only their part of the same run config)."""
    return load_config_text(
        str(run_config.get("config") or "smoke"), str(run_config.get("overrides", "")).split()
    )


def serve_deployment(config: FedGRPOConfig, grid: Grid, resume: bool) -> None:
    """The deployed server: its own files, each client known by its SuperNode's registered name."""
    if config.federation.transport != "flower-deployment":
        raise ConfigError(
            f"this ServerApp serves a deployment, not federation.transport={config.federation.transport}: "
            "`fedgrpo run CONFIG federation.transport=flower-simulation` starts the Simulation Engine"
        )
    expected = config.flower.num_supernodes or 1  # required by the config in a deployment
    transport = FlowerTransport(grid, config.flower, expected, identity="registered")
    run(config, transport, server_data_from_files(config.server), resume=resume)


def make_server_app(
    cfg: FedGRPOConfig | None = None, resume: bool = False, serve: Serve = serve_deployment
) -> ServerApp:
    """The ServerApp: the whole FedGRPO run (:func:`fedgrpo.run.experiment.run`) over a FlowerTransport;
    ``cfg`` fixes the config (a Python-launched run), else the run config gives it."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = cfg or server_config(dict(context.run_config))
        again = resume or bool(context.run_config.get("resume", False))
        check_output_dir(config, again)
        config.output_dir.mkdir(parents=True, exist_ok=True)
        attach_log_file(config.output_dir / "run.log")  # joins and refusals are logged before run()
        serve(config, grid, again)

    return app


# What `flwr run` loads (see the app folder's pyproject.toml): the config comes from the run config.
app = make_server_app()
