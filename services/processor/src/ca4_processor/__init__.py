"""CA4 processor: the edge API that turns GPU reports into Kafka events."""

from importlib.metadata import version

__version__ = version("ca4-processor")
