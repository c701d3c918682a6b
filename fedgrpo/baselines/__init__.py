"""Baselines that run on the same config, data split, seeds and held-out sets as FedGRPO."""
