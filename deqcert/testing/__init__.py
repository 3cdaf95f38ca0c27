"""deqcert.testing."""
