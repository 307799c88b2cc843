"""CA4 SDK: collect GPU metadata and report it to a CA4 edge API without blocking the notebook."""
