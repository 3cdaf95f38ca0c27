"""deqcert.models."""
