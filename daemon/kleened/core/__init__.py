"""Backend-neutral services: they decide, the platform drivers act. Never imports `api`."""
