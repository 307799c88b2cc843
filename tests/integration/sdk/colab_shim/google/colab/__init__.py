"""A stand-in for Colab's ``google.colab`` package: only ``userdata`` (Colab secrets)."""
