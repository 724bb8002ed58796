"""What a setting is: a dataclass field with a default and its parameter/CLI metadata.

A component's config dataclass (:class:`~mono_depth_ros.adapt.AdaptConfig`,
:class:`~mono_depth_ros.egomotion.EgoMotionConfig`, ...) holds the default of
each setting once; :func:`option` attaches what the ROS parameter table and the
command line need (name, description, range, choices, read-only reason, unit
conversion). :mod:`mono_depth_ros.settings` walks the dataclasses and derives
the parameter table and the CLI options from this metadata (monodepth2's
``options.py`` idea, with the defaults in the typed configs themselves).

No dependencies: the config modules import this one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Option", "option", "OPTION_KEY"]

#: Key of the :class:`Option` in a dataclass field's ``metadata``.
OPTION_KEY = "option"


@dataclass(frozen=True)
class Option:
    """Metadata of one setting.

    Attributes:
        param: ROS parameter name (flat, stable: documented, used in launch files and yaml); None = no
            parameter (an engine internal or a CLI-only setting).
        description: one line for the parameter descriptor and ``--help``.
        range: (min, max) inclusive of the parameter value, for int/float.
        step: the descriptor's step (int/float ranges).
        choices: allowed string values.
        read_only: why the setting cannot change on a running node ("" = it can, and the node applies it).
        cli: the ``mono-depth adapt`` flag (``"--lr"``), or None.
        to_param: field value -> parameter value (e.g. radians -> degrees, tuple -> "a,b"); None = same.
        from_param: parameter value -> field value (the one parser of the text form); None = same.
    """

    param: str | None
    description: str
    range: tuple | None = None
    step: float | int = 0
    choices: tuple | None = None
    read_only: str = ""
    cli: str | None = None
    to_param: Callable[[Any], Any] | None = None
    from_param: Callable[[Any], Any] | None = None

    def encode(self, value):
        """Field value -> parameter (and CLI) value."""
        return self.to_param(value) if self.to_param is not None else value

    def decode(self, value):
        """Parameter (and CLI) value -> field value (ValueError when it cannot be parsed)."""
        return self.from_param(value) if self.from_param is not None else value


def option(default, param: str | None, description: str, **meta) -> Any:
    """A dataclass field with ``default`` and an :class:`Option` (keyword arguments: its attributes).

    >>> from dataclasses import dataclass, fields
    >>> @dataclass
    ... class C:
    ...     lr: float = option(3e-4, "adapt_lr", "learning rate", range=(1e-7, 1.0), cli="--lr")
    >>> C().lr, fields(C)[0].metadata[OPTION_KEY].param
    (0.0003, 'adapt_lr')
    """
    return field(default=default, metadata={OPTION_KEY: Option(param, description, **meta)})
