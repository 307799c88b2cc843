"""CA4 processor: the edge API that turns GPU reports into Kafka events."""
