#!/usr/bin/env python
"""Simulate a registered pcneuro paradigm: ``python run_paradigm.py --help``."""
import sys

from pcneuro.cli import main

if __name__ == "__main__":
    sys.exit(main())
