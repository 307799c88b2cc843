"""The CA4 event contract: versioned, frozen Pydantic models shared by every service."""
