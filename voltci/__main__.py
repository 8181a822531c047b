"""`python -m voltci` is the `volt` command."""

from voltci.cli import main

if __name__ == "__main__":
    main()
