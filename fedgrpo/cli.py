"""The ``fedgrpo`` command: ``run CONFIG [key=value ...] [--resume]``, ``suite SUITE``, ``train-clients``,
``show-config``, ``docs``, and for Flower deployments ``example-data``, ``flower-certs``, ``org`` and
``superlink``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fedgrpo.algorithms import ALGORITHMS
from fedgrpo.client.privacy_cli import add_privacy_parser, privacy_command
from fedgrpo.config import PRESETS, ConfigError, FedGRPOConfig, load_config
from fedgrpo.console.cli import COMMANDS as CONSOLE
from fedgrpo.console.cli import console_main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgrpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run an experiment",
        description=(
            "Run a FedGRPO experiment. CONFIG is a YAML file or a preset "
            f"({', '.join(PRESETS)}); overrides use dotted keys, e.g. grpo.max_steps=5 data.num_clients=3."
        ),
        epilog="methods (method=NAME):\n" + "\n".join(f"  {a.name:<13} {a.summary}" for a in ALGORITHMS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config")
    run.add_argument("overrides", nargs="*", metavar="key=value")
    run.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    experts = sub.add_parser(
        "train-clients",
        help="train each client's expert model (LoRA SFT or GRPO on its private data), cached per client",
        description=(
            "Train every client's expert adapter on that client's private data only (the same split and "
            "recipe a run uses, so the run finds them cached). Settings: clients.model, clients.expert.*."
        ),
    )
    experts.add_argument("config")
    experts.add_argument("overrides", nargs="*", metavar="key=value")
    example = sub.add_parser(
        "example-data",
        help="write stand-in files for a deployment demo: the server's files and one per organisation",
        description="Write DIR/server/{questions,auxiliary,heldout}.jsonl and DIR/<client>/data.jsonl "
        "(owner-readable only) from the config's data section, drawn with a fresh random seed so that "
        "no party can rebuild another's file from the run config. Real parties bring their own files "
        "(format: docs/deployment.md).",
    )
    example.add_argument("config")
    example.add_argument("dir")
    example.add_argument("overrides", nargs="*", metavar="key=value")
    certs = sub.add_parser(
        "flower-certs",
        help="make a test CA, a SuperLink TLS certificate and SuperNode key pairs",
        description="Write DIR/ca.crt, DIR/server.pem, DIR/server.key and DIR/supernode-<i>{,.pub} "
        "(EC keys in OpenSSH format) for a test Flower deployment. See docs/deployment.md.",
    )
    certs.add_argument("dir")
    certs.add_argument("--host", action="append", help="SuperLink host name or IP (repeatable)")
    certs.add_argument("--supernodes", type=int, default=3, help="key pairs to make (default 3)")
    folder = sub.add_parser(
        "model-folder",
        help="print the local folder of an embedded model (smollm2, tiny-random), converting it once",
        description="Print the folder of an embedded model, e.g. to serve it with "
        '`transformers serve "$(fedgrpo model-folder smollm2)" --device cpu`.',
    )
    folder.add_argument("name", choices=["smollm2", "tiny-random"])
    check = sub.add_parser(
        "check-endpoint",
        help="check that an organisation's model endpoint answers (one greedy token), waiting if asked",
        description="Ask MODEL at the OpenAI-compatible URL for one token; exit 0 when it answers, 1 with "
        "the reason when it does not within --wait seconds.",
    )
    check.add_argument("url", help="base URL, e.g. http://127.0.0.1:8000/v1")
    check.add_argument("model", help="the model name the server expects (transformers serve: its folder)")
    check.add_argument("--wait", type=float, default=0.0, help="seconds to keep trying (a starting server)")
    suite = sub.add_parser(
        "suite",
        help="run every run of a suite file (skipping done ones), then write its report",
        description="Expand SUITE (a YAML file: base config, overrides, runs, sweeps; see docs/suites.md), "
        "validate every run before starting any, run each into SUITE_DIR/runs/NAME (done runs are "
        "skipped, started ones resumed, a crash recorded and the suite goes on), then write "
        "SUITE_DIR/report.{md,html} and plots/. Exits 1 if any run failed.",
    )
    suite.add_argument("suite")
    suite.add_argument(
        "--report",
        nargs="?",
        const="",
        metavar="DIR",
        help="run nothing: remake report.{md,html} and plots/ from the run folders in DIR (default: the "
        "suite's folder), e.g. docs/results/trust",
    )
    suite.add_argument("--check", action="store_true", help="validate and list the runs; run nothing")
    suite.add_argument(
        "--only",
        metavar="NAMES",
        help="run (or list) only the runs whose names match one of these comma-separated shell patterns, "
        "e.g. 'clean,*-consistency'; the report still covers every run in the folder",
    )
    suite.add_argument(
        "--records",
        metavar="DIR",
        help="then copy the committable records (suite.json, stale.yaml, each run's config.yaml, "
        "results.json, metrics.jsonl, outcomes.json) into DIR, e.g. docs/results/NAME, and write the "
        "report there too",
    )
    docs = sub.add_parser(
        "docs",
        help="write the config and metrics references (docs/config.md, docs/metrics.md) from the code",
    )
    docs.add_argument("dir", nargs="?", default="docs", help="where to write them (default docs)")
    add_privacy_parser(sub)
    show = sub.add_parser("show-config", help="print the resolved, validated config and exit")
    show.add_argument("config")
    show.add_argument("overrides", nargs="*", metavar="key=value")
    for name, text in CONSOLE.items():  # their own arguments: fedgrpo.console.cli
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in CONSOLE:
        return console_main(argv)
    parser = _parser()
    # Overrides may come after --resume too; argparse stops collecting positionals at the first flag.
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "flower-certs":
        from fedgrpo.flower.certs import make_certificates

        hosts = args.host or ["127.0.0.1", "localhost"]
        print(json.dumps(make_certificates(Path(args.dir), hosts, args.supernodes), indent=2))
        return 0
    if args.command == "docs":
        try:
            written = write_references(Path(args.dir))
        except OSError as err:
            print(
                f"fedgrpo: cannot write the references to {args.dir}: {err.strerror or err}", file=sys.stderr
            )
            return 1
        print("\n".join(map(str, written)))
        return 0
    if args.command == "privacy":
        return privacy_command(args)
    if args.command == "check-endpoint":
        return _check_endpoint(args.url, args.model, args.wait)
    if args.command == "model-folder":
        from fedgrpo.models.loading import resolve_model

        with _stdout_to_stderr():  # a first conversion's progress (from native code too) is not the answer
            folder = resolve_model(args.name)
        print(folder)
        return 0
    args.overrides = [*getattr(args, "overrides", []), *extra]
    logging.basicConfig(
        level=os.environ.get("FEDGRPO_LOG", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command == "suite":
        if args.overrides:
            parser.error("suite takes no key=value overrides: put them in the suite file")
        return _suite(args)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"fedgrpo: {err}", file=sys.stderr)
        return 2
    if args.command == "show-config":
        print(cfg.to_yaml(), end="")
        return 0
    try:
        return _command(args, cfg)
    except (FileExistsError, ConfigError) as err:
        print(f"fedgrpo: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except RuntimeError as err:  # a run that failed (a Flower run's status, too few clients, ...)
        print(f"fedgrpo: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # anything else: the reason in one line, the traceback for whoever asks
        logging.getLogger("fedgrpo").debug("the command failed", exc_info=True)
        where = "FEDGRPO_LOG=DEBUG shows where"
        print(f"fedgrpo: failed: {type(err).__name__}: {err} ({where})", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr for a while: native libraries write there directly."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def write_references(folder: Path) -> list[Path]:
    """``config.md`` and ``metrics.md`` in ``folder``, generated from the code."""
    from fedgrpo.config.reference import config_reference
    from fedgrpo.run.metric_names import metrics_reference

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("config.md", config_reference()), ("metrics.md", metrics_reference())):
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


def _check_endpoint(url: str, model: str, wait: float) -> int:
    from fedgrpo.client.endpoint import EndpointError, EndpointModel

    endpoint = EndpointModel(url, model, timeout_s=60.0)
    deadline = time.monotonic() + wait
    while True:
        try:
            endpoint.sample([{"role": "user", "content": "Say OK."}], 1, 0.0, 1, 0)
        except EndpointError as err:
            if time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            print(f"fedgrpo: {err}", file=sys.stderr)
            return 1
        print(f"{url} answers for {model}")
        return 0


def _suite(args: argparse.Namespace) -> int:
    from fedgrpo.suite.spec import load_suite, plan, select_runs, suite_dir

    try:
        spec, folder = load_suite(args.suite)
        out = suite_dir(spec)
        if args.report is not None:  # run nothing; with --records, copy the suite folder's records first
            target = out if args.records or not args.report else Path(args.report)
            if not _has_records(target, args.records):
                where = args.records or target
                print(
                    f"fedgrpo: no suite records in {where} (no suite.json): nothing to report",
                    file=sys.stderr,
                )
                return 2
            print(_suite_report(target, spec.name, args.records))
            return 0
        planned = plan(spec, folder)
        if args.only:
            planned = select_runs(planned, args.only)
    except ConfigError as err:
        print(f"fedgrpo: {err}", file=sys.stderr)
        return 2
    if args.check:
        for run in planned:
            print(f"{run.name}\t{run.config.method}\t{run.config.output_dir}")
        return 0
    from fedgrpo.suite.runner import run_suite

    try:
        status = run_suite(planned, out)
    except KeyboardInterrupt:
        _suite_report(out, spec.name, args.records)
        return 130
    report = _suite_report(out, spec.name, args.records)
    # this command's runs decide its exit code; one failed earlier and not selected now (--only) is
    # in the report, not counted here
    selected = {run.name for run in planned}
    failed = sorted(n for n, entry in status.items() if entry["status"] == "failed" and n in selected)
    print(report)
    if failed:
        print(f"fedgrpo: {len(failed)} run(s) failed: {', '.join(failed)} (see {report})", file=sys.stderr)
        return 1
    return 0


def _has_records(folder: Path, records: str | None) -> bool:
    """Whether a report can be made: the suite folder, or the records folder, has its suite.json."""
    from fedgrpo.suite.runner import STATUS_FILE

    return any((f / STATUS_FILE).exists() for f in (folder, *([Path(records)] if records else [])))


def _suite_report(out: Path, name: str, records: str | None) -> Path:
    """The suite's report in its folder; with ``records``, the records copied there (when the suite
    folder exists: else only the report of the records already there is remade) and their report."""
    from fedgrpo.suite.record import copy_records
    from fedgrpo.suite.report import write_report
    from fedgrpo.suite.runner import STATUS_FILE

    if records is None:
        return write_report(out, f"Suite {name}")
    if (out / STATUS_FILE).exists():
        write_report(out, f"Suite {name}")
        copy_records(out, Path(records))
    return write_report(Path(records), f"Suite {name}")


def _command(args: argparse.Namespace, cfg: FedGRPOConfig) -> int:
    """The commands that load models; imported only once the config is known to be good."""
    if args.command == "example-data":
        from fedgrpo.simulation.data import write_example_files

        print(json.dumps(write_example_files(cfg, Path(args.dir)), indent=2))
        return 0
    if args.command == "train-clients":
        from fedgrpo.simulation.clients import train_clients

        report = train_clients(cfg)
        print(json.dumps(report, indent=2))
        return 1 if any("error" in r for r in report.values()) else 0
    from fedgrpo.algorithms import run_method

    run_method(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
