"""``python -m hwloop.emulator``: same as ``hwloop emulate`` (used by ``VirtualBench(mode="process")``)."""

from hwloop.cli.bench_cmd import emulate

if __name__ == "__main__":
    emulate.main(prog_name="python -m hwloop.emulator")
