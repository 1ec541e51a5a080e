"""Scripts that produce the weights and data shipped with the studies (run by hand)."""
