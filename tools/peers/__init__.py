"""Peer compressors run side by side with scmopt in tools/bench_peers.py (no retraining)."""
