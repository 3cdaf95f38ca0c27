"""deqcert.noise."""
