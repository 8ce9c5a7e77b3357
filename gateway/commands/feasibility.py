"""``dr-gateway feasibility``: the feasibility-domain model for one migration, as text or JSON.

Loads only the model (``gateway/feasibility.py``) and numpy: no SQL, no OpenADR.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from gateway import feasibility as fm

CHECKPOINT_WRITE_GB_PER_S = 0.6
"""Default checkpoint write rate, measured on an H200 [GB/s]."""
RESTORE_GB_PER_S = 1.5
"""Default restore rate, measured on an H200 [GB/s]."""
UNITS = {
    "transfer_s": "s",
    "migration_s": "s",
    "migration_kwh": "kWh",
    "breakeven_s": "s",
    "max_checkpoint_gb": "GB",
}
"""The unit printed after each result in the text form."""


def feasibility_result(args: argparse.Namespace) -> dict[str, float | bool]:
    """The model's answer for the options in ``args``, by name (units in the names)."""
    write_s = (
        args.checkpoint_write_s
        if args.checkpoint_write_s is not None
        else args.checkpoint_gb / CHECKPOINT_WRITE_GB_PER_S
    )
    restore_s = (
        args.restore_s if args.restore_s is not None else args.checkpoint_gb / RESTORE_GB_PER_S
    )
    params = fm.FeasibilityParams(
        alpha=args.alpha,
        efficiency=args.efficiency,
        network_kwh_per_gb=args.network_kwh_per_gb,
        idle_kw=args.idle_kw,
    )
    result = fm.assess(
        checkpoint_gb=args.checkpoint_gb,
        bandwidth_gbps=args.bandwidth_gbps,
        window_s=args.window_h * 3600.0,
        checkpoint_write_s=write_s,
        restore_s=restore_s,
        job_power_kw=args.job_power_kw,
        params=params,
    )
    return {
        "transfer_s": float(result.transfer_s),
        "migration_s": float(result.migration_s),
        "migration_kwh": float(result.migration_kwh),
        "breakeven_s": float(result.breakeven_s),
        "feasible_time": bool(np.all(result.feasible_time)),
        "feasible_energy": bool(np.all(result.feasible_energy)),
        "max_checkpoint_gb": float(result.max_checkpoint_gb),
    }


def run(args: argparse.Namespace) -> int:
    """Print the model's answer, one ``name value unit`` line each or JSON; exit code 0."""
    result = feasibility_result(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for key, value in result.items():
        text = str(value).lower() if isinstance(value, bool) else f"{value:.6g}"
        print(f"{key:<18} {text} {UNITS.get(key, '')}".rstrip())
    return 0
