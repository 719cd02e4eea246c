"""Serving trained models to other jobs over HTTP (``rlhf-dist serve-rm``)."""
