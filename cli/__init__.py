"""The ``nn2pgm`` command: a thin layer over the library's public API."""
