"""What more than one attnlab module needs, and nothing else."""
