"""Models trained elsewhere (insightface's released checkpoints) brought into ArcFlow."""
