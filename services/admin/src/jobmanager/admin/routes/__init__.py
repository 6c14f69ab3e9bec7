"""The admin API routes, one module per table or concern."""
