"""Device-lab characterisation over the ``Chip`` interface: program-and-verify in training, worn-device
inference, retention, endurance cycling and bench-time/energy estimates (docs/characterise.md)."""
