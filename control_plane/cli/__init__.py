"""`mhp`: the command-line client of the management API (argparse + httpx + rich)."""
