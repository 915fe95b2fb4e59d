"""python -m hwloop"""

from hwloop.cli import main

main()
