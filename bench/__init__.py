"""The benchmark of Job Manager (`make bench`, `make bench-quick`); not part of the test suite.

Every measurement runs against the real RabbitMQ and Postgres, in an AMQP namespace and a
database of its own that it removes afterwards, and the baselines (a raw aio-pika relay,
Celery, and the transport skeleton: our messages and executors with a database-less stand-in
for the matcher) run in the same invocation, one after the other. `python -m bench.run --help`.
"""
