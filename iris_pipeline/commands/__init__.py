"""Sub-commands of the `iris` CLI, one module each; every module exposes `register(app)`."""
