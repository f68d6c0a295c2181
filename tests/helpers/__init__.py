"""What the tests share: tiny random-weight models and their directories (tiny.py), float64
NumPy references (reference.py), the chi-square check (stats_check.py), a live server on a
tiny model (server_harness.py) and the program the kill tests stop mid-way (kill_helper.py)."""
