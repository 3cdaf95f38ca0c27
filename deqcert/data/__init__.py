"""deqcert.data."""
