"""deqcert.solvers."""
