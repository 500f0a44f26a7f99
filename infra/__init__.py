"""Service stacks: docker-compose.yml for users, local/ (no Docker) for development and CI."""
