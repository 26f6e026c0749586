import sys

from bench.schemas import main

sys.exit(main(sys.argv[1:]))
