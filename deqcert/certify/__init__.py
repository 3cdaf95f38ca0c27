"""deqcert.certify."""
