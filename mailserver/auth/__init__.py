"""Authentication and the user directory: who has mail here, and how they prove it."""
