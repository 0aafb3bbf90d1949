"""An example website that logs its users in with a pool of the portal (see examples/README.md)."""
