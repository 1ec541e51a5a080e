"""A stand-in for a tenstorrent/tt-forge-models checkout (not on PyPI, so it cannot be
installed here): a `ForgeModel` base and one loader, written by us to the interface its
`base.py` documents (../shared/DESIGN.md section 9), laid out as the zoo lays out its models
(`<model>/pytorch/loader.py`). No code of the zoo is copied; tests import it as `forge_zoo`.
"""
