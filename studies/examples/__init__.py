"""Example user models, written as a user would write their own file and run with
``autotune study --model studies/examples/<file>.py:STUDY``: not registered by name."""
