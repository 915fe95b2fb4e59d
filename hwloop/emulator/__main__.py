"""``python -m hwloop.emulator``: same as ``hwloop emulate`` (used by ``VirtualBench(mode="process")``)."""

from hwloop.emulator.command import emulate

if __name__ == "__main__":
    emulate.main(prog_name="python -m hwloop.emulator")
