"""What the lab benchmarks share: piler's smtp-source load, as options."""

import argparse


def arguments(description):
    """-m messages, -l length in bytes, -s parallel sessions (default: piler's 10000 x 100 kB over 20)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-m", "--messages", type=int, default=10000)
    parser.add_argument("-l", "--length", type=int, default=100000)
    parser.add_argument("-s", "--sessions", type=int, default=20)
    return parser.parse_args()
