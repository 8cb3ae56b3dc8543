"""Modules of tools/build_real.py: pretrained nets from pip packages, offline data, export."""
