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
from fedgrpo.flower.run_config import TOKEN_KEY, load_server_config
from fedgrpo.flower.transport import FlowerTransport
from fedgrpo.run.assemble import server_data_from_files
from fedgrpo.run.experiment import run
from fedgrpo.storage.run_folder import attach_log_file, check_output_dir

# how a ServerApp runs the experiment once its run folder is ready: (config, grid, resume)
Serve = Callable[[FedGRPOConfig, Grid, bool], None]


def server_config(run_config: dict) -> FedGRPOConfig:
    """The whole config, fully checked: from this machine's store when the run config carries a token
    (``fedgrpo run`` sends only the clients' part: :mod:`fedgrpo.flower.run_config`), else the run
    config's own ``config`` (a preset, a file or YAML text)."""
    text, overrides = str(run_config.get("config") or "smoke"), str(run_config.get("overrides", "")).split()
    if run_config.get(TOKEN_KEY):
        return load_server_config(str(run_config[TOKEN_KEY]), text, overrides)
    return load_config_text(text, overrides)


def serve_deployment(config: FedGRPOConfig, grid: Grid, resume: bool) -> None:
    """The deployed server: its own files, each client known by its SuperNode's registered name."""
    if config.federation.transport != "flower-deployment":
        raise ConfigError(
            f"this ServerApp serves a deployment, not federation.transport={config.federation.transport}: "
            "`fedgrpo run CONFIG federation.transport=flower-simulation` starts the Simulation Engine"
        )
    expected = config.flower.num_supernodes or 1  # required by the config in a deployment
    transport = FlowerTransport(grid, config.flower, expected, identity="registered")
    data = server_data_from_files(config.server, config.federation.canaries.share)
    run(config, transport, data, resume=resume)


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
