"""Application services and the ports (protocols) they talk to."""
