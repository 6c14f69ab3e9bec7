"""What the tests (`tests/`) and the benchmark (`bench/`) share to run Job Manager for real
against the shared RabbitMQ and Postgres: free ports (`ports`), AMQP namespaces of their own
(`namespaces`), databases of their own (`databases`), service processes (`processes`), our
services running in one namespace (`stack`), and polling until something holds (`waiting`).

It is a workspace member like `libs/core`, and not a directory of `tests/` or `bench/`,
because both import it and neither imports the other: pytest puts `tests/` on the path, the
benchmark runs as `python -m bench.run` from the checkout, and an installed package is the one
place both find without a path trick. Being under `libs/`, it is checked by `mypy --strict`
with the rest of our code. The dev dependency group installs it (so does `bench`); no service
depends on it.
"""
