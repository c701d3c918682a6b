"""A suite file, expanded into named runs and validated whole before anything starts.

A suite names a base config (a preset or a YAML path, relative to the suite file), overrides for all
runs, a list of runs (a method plus its own overrides) and sweeps (a dotted key and its values). Each
run is crossed with the suite's sweeps and its own; a run's name is its own name (default: the method)
followed by ``key=value`` for every swept key, so names stay stable when runs are added. Every
expanded config is validated, its method checked to be in this build and its data split drawn, so an
unknown method, M > K or a K the data cannot fill fails at once, naming the run.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedgrpo.config import PRESETS, ConfigError, FedGRPOConfig, config_from_mapping, read_source, set_dotted

Overrides = dict[str, Any]


class RunEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str
    name: str | None = None
    overrides: Overrides = {}
    sweeps: dict[str, list[Any]] = {}


class SuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "suite"
    base: str = Field(description="a preset or a config file (relative to the suite file)")
    suite_dir: str = Field("runs/suites/{name}", description="where runs/, logs/ and the report go")
    overrides: Overrides = {}
    sweeps: dict[str, list[Any]] = {}
    runs: list[RunEntry]

    @field_validator("runs")
    @classmethod
    def _some_runs(cls, value: list[RunEntry]) -> list[RunEntry]:
        if not value:
            raise ValueError("a suite needs at least one run")
        return value


class SuiteError(ConfigError):
    """A suite that cannot run; the message names the entry."""


class PlannedRun(BaseModel):
    """One expanded run: its stable name and its validated config."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    config: FedGRPOConfig


def _name_part(key: str, value: Any) -> str:
    text = f"{key.split('.')[-1]}={value}"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)


def _sweep_points(sweeps: dict[str, list[Any]], where: str) -> list[dict[str, Any]]:
    for key, values in sweeps.items():
        if not values:
            raise SuiteError(f"{where}: sweep {key!r} has no values")
    keys = list(sweeps)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*sweeps.values())]


def load_suite(path: str | Path) -> tuple[SuiteSpec, Path]:
    """Read and check the suite file's shape; returns the spec and its folder (for a relative base)."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"suite file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
        return SuiteSpec.model_validate(raw), path.parent
    except yaml.YAMLError as err:
        raise SuiteError(f"{path} is not valid YAML: {err}") from err
    except ValidationError as err:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'suite'}: {e['msg']}" for e in err.errors()]
        raise SuiteError(f"{path}: invalid suite:\n" + "\n".join(lines)) from None


def suite_dir(spec: SuiteSpec) -> Path:
    return Path(spec.suite_dir.format(name=spec.name))


def plan(spec: SuiteSpec, folder: Path = Path("."), *, check_data: bool = True) -> list[PlannedRun]:
    """Every run of the suite with its config, all validated; raises SuiteError naming the entry."""
    base_source = spec.base if spec.base in PRESETS else str(folder / spec.base)
    base = read_source(base_source)
    runs_dir = suite_dir(spec) / "runs"
    planned: list[PlannedRun] = []
    drawn: set[tuple[str, int]] = set()  # data settings and seed already drawn once
    for i, entry in enumerate(spec.runs):
        label = entry.name or entry.method
        where = f"runs[{i}] ({label})"
        for point in _sweep_points({**spec.sweeps, **entry.sweeps}, where):
            name = "__".join([label, *(_name_part(k, v) for k, v in point.items())])
            data = copy.deepcopy(base)
            try:
                for key, value in {**spec.overrides, **entry.overrides, **point}.items():
                    set_dotted(data, key, value)
                set_dotted(data, "method", entry.method)
                set_dotted(data, "name", name)
                set_dotted(data, "run.output_dir", str(runs_dir / name))
                cfg = config_from_mapping(data)
                data_key = (cfg.data.model_dump_json(), cfg.seed)
                if check_data and cfg.federation.transport != "flower-deployment" and data_key not in drawn:
                    from fedgrpo.simulation.data import build_data

                    build_data(cfg)  # K larger than the data allow, too few examples for the sizes
                    drawn.add(data_key)
            except ConfigError as err:
                raise SuiteError(f"suite {spec.name!r}, run {name!r} ({where}): {err}") from None
            planned.append(PlannedRun(name=name, config=cfg))
    names = [p.name for p in planned]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SuiteError(f"suite {spec.name!r}: runs share names {duplicates}; give each entry a name")
    return planned


def select_runs(planned: list[PlannedRun], patterns: str) -> list[PlannedRun]:
    """The planned runs whose names match one of the comma-separated shell patterns (``fnmatch``), in
    the suite's order; raises SuiteError for a pattern that matches no run (most likely a typo)."""
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    unmatched = [w for w in wanted if not any(fnmatch.fnmatchcase(r.name, w) for r in planned)]
    if not wanted or unmatched:
        names = ", ".join(r.name for r in planned)
        raise SuiteError(f"--only {patterns!r}: no run matches {unmatched or patterns!r} (runs: {names})")
    return [r for r in planned if any(fnmatch.fnmatchcase(r.name, w) for w in wanted)]
