"""Starting a FedGRPO run on a Flower engine, test certificates and keys, per-client data files.

``fedgrpo run CONFIG federation.transport=flower-simulation`` runs the Simulation Engine in this
process (Ray workers host the virtual clients); ``flower-deployment`` submits the app to a running
SuperLink with ``flwr run`` and streams its logs. Either way the ServerApp runs
:func:`fedgrpo.trainer.run` with a FlowerTransport and writes the usual run folder.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from fedgrpo.config import ConfigError, FedGRPOConfig

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).parent / "app"  # the Flower app folder (pyproject.toml with [tool.flwr.app])


def _absolute(cfg: FedGRPOConfig) -> FedGRPOConfig:
    """The config with an absolute output folder: the ServerApp may run in another working directory."""
    data = cfg.model_dump(mode="json")
    data["run"]["output_dir"] = str(cfg.output_dir.resolve())
    return FedGRPOConfig.model_validate(data)


def _results(cfg: FedGRPOConfig) -> dict[str, Any]:
    path = cfg.output_dir / "results.json"
    if not path.exists():
        raise RuntimeError(f"the Flower run ended without {path}; see {cfg.output_dir / 'run.log'}")
    return json.loads(path.read_text())


def run_on_flower(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    cfg = _absolute(cfg)
    if cfg.federation.transport == "flower-simulation":
        return run_simulation_engine(cfg, resume)
    return run_deployment(cfg, resume)


def run_simulation_engine(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """The whole run on Flower's Simulation Engine (Ray backend) with N virtual clients."""
    from flwr.simulation import run_simulation

    from fedgrpo.transport.flower.apps import make_client_app, make_server_app

    fl = cfg.flower
    n = fl.num_supernodes or cfg.data.num_clients
    init_args: dict[str, Any] = {"logging_level": "error", "log_to_driver": True}
    if fl.ray_cpus:
        init_args["num_cpus"] = fl.ray_cpus
    backend = {"client_resources": {"num_cpus": fl.client_cpus, "num_gpus": 0.0}, "init_args": init_args}
    log.info("Flower Simulation Engine: %d virtual clients, %s CPU each", n, fl.client_cpus)
    run_simulation(make_server_app(cfg, resume), make_client_app(cfg.to_yaml()), n, backend_config=backend)
    return _results(cfg)


def flwr_home(cfg: FedGRPOConfig, folder: Path) -> Path:
    """A private FLWR_HOME whose ``fedgrpo`` connection points at the configured SuperLink."""
    fl = cfg.flower
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", 'default = "fedgrpo"', "", "[superlink.fedgrpo]", f'address = "{fl.superlink}"']
    if fl.insecure:
        lines.append("insecure = true")
    else:
        assert fl.root_certificates is not None  # the config refuses this combination
        lines.append(f'root-certificates = "{Path(fl.root_certificates).expanduser().resolve()}"')
    (folder / "config.toml").write_text("\n".join(lines) + "\n")
    return folder


def run_deployment(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """Submit the app to the SuperLink with ``flwr run`` (logs streamed) and wait for the run."""
    out = cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    home = flwr_home(cfg, out / "flwr-home")
    yaml_text = cfg.to_yaml()
    if "'''" in yaml_text:
        raise ConfigError("the config contains ''' and cannot travel in a TOML run config")
    run_config = out / "flower_run_config.toml"
    run_config.write_text(f"config = '''\n{yaml_text}'''\noverrides = \"\"\nresume = {str(resume).lower()}\n")
    flwr = shutil.which("flwr", path=str(Path(sys.executable).parent)) or "flwr"
    cmd = [flwr, "run", str(APP_DIR), "fedgrpo", "--run-config", str(run_config), "--stream"]
    log.info("submitting to the SuperLink at %s: %s", cfg.flower.superlink, " ".join(cmd))
    proc = subprocess.run(cmd, env={**os.environ, "FLWR_HOME": str(home)}, check=False)
    if proc.returncode:
        raise RuntimeError(f"`flwr run` failed with exit code {proc.returncode}")
    return _results(cfg)


# -- test certificates and SuperNode keys ---------------------------------------------------------
def make_certificates(folder: Path, hosts: list[str], supernodes: int, days: int = 365) -> dict[str, Any]:
    """A CA, a SuperLink server certificate for ``hosts`` (signed by that CA) and one EC key pair per
    SuperNode in OpenSSH format (what ``flower-supernode --auth-supernode-private-key`` and
    ``flwr supernode register`` read). For test deployments; a real one uses its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.write_bytes(pem)
        path.chmod(0o600)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("FedGRPO test CA"))
        .issuer_name(name("FedGRPO test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    server = (
        x509.CertificateBuilder()
        .subject_name(name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    write_key(ca_key, folder / "ca.key")
    (folder / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    write_key(server_key, folder / "server.key")
    keys = []
    for i in range(supernodes):
        keys.append(write_supernode_key(folder, f"supernode-{i}"))
    return {"ca": str(folder / "ca.crt"), "server": str(folder / "server.pem"), "supernode_keys": keys}


def write_supernode_key(folder: Path, stem: str) -> str:
    """An EC (P-384) key pair in OpenSSH format: ``STEM`` (private) and ``STEM.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private = folder / stem
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    private.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    (folder / f"{stem}.pub").write_bytes(public + f" {stem}\n".encode())
    return str(private)


def export_client_data(cfg: FedGRPOConfig, folder: Path) -> dict[str, str]:
    """Each client's private examples into its own ``<client>.jsonl`` (for its SuperNode's node config)."""
    from fedgrpo.data import write_client_data
    from fedgrpo.trainer import build_data

    split = build_data(cfg)
    out = {}
    for name, examples in split.clients.items():
        path = folder / f"{name}.jsonl"
        write_client_data(examples, path)
        out[name] = str(path.resolve())
    return out
