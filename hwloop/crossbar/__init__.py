"""The crossbar layer: where every weight lives on the chip (``map``) and the weights as conductance pairs
on it (``weights``: ``ChipWeights``, imported from there; it needs torch, the map does not)."""

from hwloop.crossbar.map import CrossbarMap, LayerMap

__all__ = ["CrossbarMap", "LayerMap"]
