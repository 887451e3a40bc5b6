"""``python -m streamrnn`` runs the CLI."""

from streamrnn.cli import main

if __name__ == "__main__":
    main()
