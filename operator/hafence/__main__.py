import sys

from hafence.cli import main

sys.exit(main())
