"""`python -m mmal`: the same command as the `mmal` script."""

from mmal.cli import app

if __name__ == "__main__":
    app()
