"""ArcFlow: ArcFace face recognition as a reproducible pipeline.

The library knows face recognition and nothing about DVC, Prefect or the command line.
"""

__version__ = "0.1.0"
