"""python -m hwloop.cli"""

from hwloop.cli import main

main()
