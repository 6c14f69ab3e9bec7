"""What every Job Manager service shares: settings, message contracts, AMQP topology."""
