"""Route groups of the gateway, one module each (recommend, health)."""
