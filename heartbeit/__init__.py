"""HeartBEiT Bench: ECG ingest → image shards → MIM pretraining → benchmark matrix → results."""

__version__ = "0.1.0"
