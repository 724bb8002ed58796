import sys

from mono_depth_ros.cli import main

sys.exit(main())
