"""The FedGRPO ServerApp: the same run as in-process, over a FlowerTransport to the ClientApps.

On the Deployment Engine the server holds only its own files (``server.*``) and knows each client by
the name registered for its SuperNode key; there is no label audit. On the Simulation Engine the
experimenter holds the whole seeded split, as in an in-process run.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedgrpo.config import FedGRPOConfig, load_config_text
from fedgrpo.flower.transport import FlowerTransport
from fedgrpo.run.assemble import build_data, server_data_from_files
from fedgrpo.run.experiment import run, run_simulation
from fedgrpo.storage.run_folder import attach_log_file, check_output_dir


def server_config(run_config: dict) -> FedGRPOConfig:
    """The whole config, fully checked (the ClientApps read only their part of the same run config)."""
    return load_config_text(
        str(run_config.get("config") or "smoke"), str(run_config.get("overrides", "")).split()
    )


def make_server_app(cfg: FedGRPOConfig | None = None, resume: bool = False) -> ServerApp:
    """The ServerApp: the whole FedGRPO run (:func:`fedgrpo.run.experiment.run`) over a FlowerTransport."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = cfg or server_config(dict(context.run_config))
        again = resume or bool(context.run_config.get("resume", False))
        check_output_dir(config, again)
        config.output_dir.mkdir(parents=True, exist_ok=True)
        attach_log_file(config.output_dir / "run.log")  # joins and refusals are logged before run()
        if config.federation.transport == "flower-deployment":
            expected = config.flower.num_supernodes or 1  # required by the config in a deployment
            transport = FlowerTransport(grid, config.flower, expected, identity="registered")
            run(config, transport, server_data_from_files(config.server), resume=again)
        else:
            expected = min(config.flower.num_supernodes or config.data.num_clients, config.data.num_clients)
            transport = FlowerTransport(grid, config.flower, expected, identity="profile")
            run_simulation(config, transport, build_data(config), again)

    return app


# What `flwr run` loads (see the app folder's pyproject.toml): the config comes from the run config.
app = make_server_app()
