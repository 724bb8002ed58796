"""One check of ``ROS_DOMAIN_ID`` for every entry point that joins a ROS 2 graph.

rcl reads ``ROS_DOMAIN_ID`` as an unsigned integer; Fast DDS (and every RTPS
implementation) maps domain *d* to UDP ports ``7400 + 250 * d + offset``, which
must stay below 65536, so it refuses *d* > 232 -- but only when the first
participant is created, deep inside a run, as a port error. This module refuses
a bad value before ``rclpy.init`` with one line naming the variable and the range.
(On Linux, domains 0..101 also stay clear of the kernel's ephemeral ports; 102..232
work but may collide with them: see the ROS 2 "The ROS_DOMAIN_ID" concept page.)

Imports nothing from ROS: it runs before rclpy is loaded.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

__all__ = ["MAX_DOMAIN_ID", "domain_id_error", "exit_if_invalid_domain_id"]

#: Largest domain id whose RTPS ports fit in 16 bits (7400 + 250 * 232 + 1 + 2 * 119 < 65536).
MAX_DOMAIN_ID = 232


def domain_id_error(environ: Mapping[str, str] | None = None) -> str | None:
    """Why ``ROS_DOMAIN_ID`` in ``environ`` (default: ``os.environ``) is unusable, or None.

    Unset or empty is fine (rcl's default domain, 0).

    >>> domain_id_error({"ROS_DOMAIN_ID": "233"})[:30]
    'ROS_DOMAIN_ID=233 is not valid'
    >>> domain_id_error({"ROS_DOMAIN_ID": " 42 "}) is None
    True
    """
    env = os.environ if environ is None else environ
    raw = env.get("ROS_DOMAIN_ID")
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip()
    ok = value.isdigit() and int(value) <= MAX_DOMAIN_ID
    if ok:
        return None
    why = "not a non-negative integer" if not value.isdigit() else f"above {MAX_DOMAIN_ID}"
    return (f"ROS_DOMAIN_ID={raw} is not valid ({why}): use an integer 0..{MAX_DOMAIN_ID} "
            f"(0..101 on Linux keeps clear of ephemeral ports), or unset it for domain 0")


def exit_if_invalid_domain_id(prog: str, environ: Mapping[str, str] | None = None) -> None:
    """Print one clear line and exit with status 2 when ``ROS_DOMAIN_ID`` is unusable.

    Call it first in every entry point that initialises rclpy.
    """
    err = domain_id_error(environ)
    if err is not None:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2)
