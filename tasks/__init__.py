"""Pipeline stages: one module per stage, each a plain function plus a `python -m tasks.<stage>` entry."""
