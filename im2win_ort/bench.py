"""Old path of im2win_ort.measure.bench: `python -m im2win_ort.bench` and `import im2win_ort.bench` keep working."""

import sys

from .measure import bench as _moved

if __name__ == "__main__":
    raise SystemExit(_moved.main())
sys.modules[__name__] = _moved
