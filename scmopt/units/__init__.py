"""Units: which channels of which tensors are removable, and their layouts."""

from scmopt.units.analysis import Cut, Group, Unit, UnitGraph, analyze

__all__ = ["Cut", "Group", "Unit", "UnitGraph", "analyze"]
