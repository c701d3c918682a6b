"""The FedGRPO ServerApp: the same run as in-process, over a FlowerTransport to the ClientApps."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedgrpo.config import FedGRPOConfig
from fedgrpo.flower.client_app import config_from_run_config
from fedgrpo.flower.transport import FlowerTransport
from fedgrpo.run.assemble import build_data
from fedgrpo.run.experiment import run_simulation


def make_server_app(cfg: FedGRPOConfig | None = None, resume: bool = False) -> ServerApp:
    """The ServerApp: the whole FedGRPO run (:func:`fedgrpo.run.experiment.run`) over a FlowerTransport."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = cfg or config_from_run_config(dict(context.run_config))
        again = resume or bool(context.run_config.get("resume", False))
        expected = config.flower.num_supernodes or config.data.num_clients
        transport = FlowerTransport(grid, config.flower, min(expected, config.data.num_clients))
        run_simulation(config, transport, build_data(config), again)

    return app


# What `flwr run` loads (see the app folder's pyproject.toml): the config comes from the run config.
app = make_server_app()
