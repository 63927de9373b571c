"""``python -m edge_rt ...`` runs the command-line interface (same as the ``edge-rt`` script)."""

from edge_rt.cli import main

if __name__ == "__main__":
    main()
