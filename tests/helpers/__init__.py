"""
What the test modules share and is not a fixture: paths, devices, models with answers in closed form,
the command lines of training runs. No test module imports another; each imports from here, and
pytest collects nothing here (no ``test_*.py``).
"""
