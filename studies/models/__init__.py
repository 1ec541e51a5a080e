"""Model definitions used by the studies (imported only in trial processes)."""
