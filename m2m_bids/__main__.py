"""``python -m m2m_bids`` is the same BIDS App as the ``m2m`` command."""

from m2m_bids.cli.app import main

if __name__ == "__main__":
    main()
