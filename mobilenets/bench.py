"""Old import path of :mod:`mobilenets.deploy.bench`: ``from mobilenets import bench`` still works."""

import sys

from mobilenets.deploy import bench as _bench

sys.modules[__name__] = _bench
