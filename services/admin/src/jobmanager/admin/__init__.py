"""The admin service: the four tables over HTTP, with roles, audit and Auto Cleanup."""
