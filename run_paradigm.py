#!/usr/bin/env python
"""Simulate a registered pcneuro paradigm: ``python run_paradigm.py --help``."""
import sys

from pcneuro.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
